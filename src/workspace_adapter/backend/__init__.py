"""The workspace backend daemon: store, run queue, subscriptions, and its one port.

``store`` keeps events and runs (written by ``groupcommit``'s thread, as ``mutations``),
``runqueue`` runs them, ``subscriptions`` streams them, ``service`` holds the methods;
``server`` runs the process on one port, ``session`` serves each WebSocket connection and
``http`` the HTTP routes; ``appserver`` links to a Codex app-server, with the frames of
``passthrough``; ``transport`` is what sits below ASGI.
"""

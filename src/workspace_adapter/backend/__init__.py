"""The workspace backend daemon: store, run queue, subscriptions, and its one port.

``store`` keeps events and runs, ``executor`` runs them, ``subscriptions`` streams them,
``dispatch`` holds the methods, ``http`` and ``server`` do the I/O.
"""

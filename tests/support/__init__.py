"""What several test folders share: a real backend daemon, trivial flows, wire and process helpers.

``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so test modules import ``support.<module>``.
"""

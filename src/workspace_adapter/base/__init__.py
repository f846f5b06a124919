"""Shared base helpers (errors, logs, paths, processes, tails, SQLite, times); nothing above."""

"""Shared base helpers: errors, logs, paths, processes, SQLite files, times; nothing above them."""

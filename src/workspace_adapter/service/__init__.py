"""The service path (SPEC §9): watch release sources, keep records, run maintenance attempts."""

"""The service path: watch release sources, keep records, run maintenance attempts."""

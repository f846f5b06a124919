"""workspace-adapter: keeps a maintained fork rebased on its upstream's releases."""

__version__ = "0.1.0"

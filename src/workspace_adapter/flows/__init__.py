"""Flow packages (``flow.toml``), trigger matching, and the step runner.

Import the submodules directly: ``flows.package`` is cheap, ``flows.runner`` pulls in anyio.
"""

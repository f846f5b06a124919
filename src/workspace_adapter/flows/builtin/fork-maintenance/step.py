"""Step entry point of the built-in fork-maintenance flow; the work is in workspace_adapter."""

from workspace_adapter.maintenance.step import main

raise SystemExit(main())

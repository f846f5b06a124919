"""Step entry point of the patch-moi-harness flow; the work is in workspace_adapter."""

from workspace_adapter.maintenance.step import main

raise SystemExit(main())

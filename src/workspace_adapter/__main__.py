from workspace_adapter.cli import main

raise SystemExit(main())

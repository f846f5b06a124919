"""The local workspace: workspace.toml, schedules, the local run state and running tasks."""

"""The run stage: the runner, its scheduler and time budget, executors, devices, progress and status."""

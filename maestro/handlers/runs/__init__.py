"""Runs: the scheduler, run planning and the runner that executes BigQuery jobs."""

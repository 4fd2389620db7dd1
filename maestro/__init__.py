"""Maestro: a SQL-centric, event-sourced orchestrator for BigQuery."""

__version__ = "0.1.0"

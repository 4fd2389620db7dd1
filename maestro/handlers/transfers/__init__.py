"""Transfers out of and into BigQuery: database exports (db_export)."""

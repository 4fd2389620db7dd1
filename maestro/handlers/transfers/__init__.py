"""Transfers out of and into BigQuery: Sheets and database exports."""

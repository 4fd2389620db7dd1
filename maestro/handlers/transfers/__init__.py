"""Transfers: imports from databases, external loads, Sheets and database exports."""

"""DSN helpers shared by fixtures and tests (a module of its own: ``from conftest import`` is
ambiguous once a test folder has its own conftest.py)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def with_database(dsn: str, database: str) -> str:
    """Swap the database name of a DSN (URL form, with or without a host socket query)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))

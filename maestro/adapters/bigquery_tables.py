"""A table's BigQuery resource (schema, rows, size): what ``tables.get`` answers, or None; and
its schema alone, as the API represents it (completion callbacks' ``schema``).

Kept apart from :mod:`maestro.adapters.bigquery` (jobs): reading a table's metadata is not work in
BigQuery and needs none of the job machinery, only the client that the jobs facade holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.api_core import exceptions as api_exceptions

from maestro.adapters.bigquery_errors import classify
from maestro.errors import BigQueryError


def _with_modes(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BigQuery omits ``mode`` when it is the default (NULLABLE); callers read it on every field."""
    return [
        {**f, "mode": f.get("mode") or "NULLABLE", **({"fields": _with_modes(f["fields"])} if f.get("fields") else {})}
        for f in fields
    ]


async def table_resource(jobs: Any, destination: str) -> dict[str, Any] | None:
    """The REST resource of ``project.dataset.table`` (``jobs``: a ``BigQueryJobs``); None when
    BigQuery has no such table (it has not run yet, or was dropped outside Maestro)."""
    client = jobs.client
    try:
        table = await asyncio.to_thread(client.get_table, destination, timeout=60)
    except api_exceptions.NotFound:
        return None
    except Exception as exc:
        error = classify(exc)
        raise BigQueryError(error.reason, error.message, retryable=error.retryable) from exc
    resource = table.to_api_repr()
    schema = resource.get("schema")
    if isinstance(schema, dict) and isinstance(schema.get("fields"), list):
        resource["schema"] = {**schema, "fields": _with_modes(schema["fields"])}
    return resource


async def table_schema(client: Any, table: str) -> list[dict[str, Any]]:
    """``[{"name", "type", "mode", ...}]`` of ``project.dataset.table``."""

    def get() -> list[dict[str, Any]]:
        return [field.to_api_repr() for field in client.get_table(table).schema]

    try:
        return await asyncio.to_thread(get)
    except api_exceptions.NotFound as exc:
        raise BigQueryError("notFound", f"table {table} not found", retryable=False) from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise BigQueryError(type(exc).__name__, f"cannot read the schema of {table}", retryable=True) from exc

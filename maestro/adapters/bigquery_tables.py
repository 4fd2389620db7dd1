"""A BigQuery table's schema, as the API represents it (for completion callbacks' ``schema``)."""

from __future__ import annotations

import asyncio
from typing import Any

from google.api_core import exceptions as api_exceptions

from maestro.errors import BigQueryError


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

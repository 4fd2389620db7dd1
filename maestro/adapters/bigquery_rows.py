"""A table's rows, page by page, through the BigQuery client's ``list_rows`` (tabledata.list).

Reading a table this way costs no query (tabledata.list is not billed) and pages keep memory
bounded. The client's calls block, so each page is fetched in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from maestro.adapters.bigquery_errors import classify
from maestro.errors import BigQueryError


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # BigQuery's field type: STRING, INT64 (or INTEGER), RECORD, ...
    mode: str = "NULLABLE"


@dataclass(frozen=True, slots=True)
class TableRows:
    columns: list[Column]
    total_rows: int  # as the table's metadata says when it was read
    pages: AsyncIterator[list[tuple[Any, ...]]]


async def table_rows(client: Any, table: str, *, page_size: int = 1024) -> TableRows:
    """``table`` ("project.dataset.name") as its columns, row count and an async iterator of pages
    (each a list of value tuples, in the columns' order)."""
    try:
        meta = await asyncio.to_thread(client.get_table, table)
    except Exception as exc:
        raise _translated(exc) from exc
    columns = [Column(f.name, f.field_type, f.mode or "NULLABLE") for f in meta.schema]
    return TableRows(columns, int(meta.num_rows or 0), _pages(client, meta, page_size))


async def _pages(client: Any, meta: Any, page_size: int) -> AsyncIterator[list[tuple[Any, ...]]]:
    pages = iter(client.list_rows(meta, page_size=page_size).pages)
    done = object()
    while True:
        try:
            page = await asyncio.to_thread(lambda: next(pages, done))
        except Exception as exc:
            raise _translated(exc) from exc
        if page is done:
            return
        yield [tuple(row.values()) for row in page]  # type: ignore[attr-defined]


def _translated(exc: Exception) -> BigQueryError:
    """The client's error as ours, classified as the job adapter does (maestro.adapters.bigquery)."""
    error = classify(exc)
    return BigQueryError(error.reason, error.message, retryable=error.retryable)

"""The pure half of the Sheets export: cells, batches, limits and which tabs to keep.

Everything here is decided before (or without) a call to Google, so a result that cannot fit is
refused with the limit it breaks and the spreadsheet is never half-written.

Google's documented limits (developers.google.com/sheets/api/limits and the Sheets help):
10,000,000 cells per spreadsheet (the grid cells of every tab, filled or not), 50,000 characters
per cell, 18,278 columns per tab, and a hard 10,485,760-byte request body, with ~2 MB per request
recommended. A batch is a run of rows whose JSON stays under :attr:`SheetsLimits.batch_bytes`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import math
import tempfile
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from maestro.errors_outside import SheetsLimitExceeded

PLACEHOLDER_TAB = "Sheet1"  # the tab Google puts in a new spreadsheet; the export removes it
_MAX_SAFE_INT = 2**53  # larger integers lose digits as spreadsheet numbers: sent as text
_REQUEST_OVERHEAD = 256  # {"range": ..., "majorDimension": "ROWS", "values": []} around the rows


@dataclass(frozen=True, slots=True)
class SheetsLimits:
    max_cells: int = 10_000_000
    max_cell_chars: int = 50_000
    max_columns: int = 18_278
    max_request_bytes: int = 10_485_760
    batch_bytes: int = 2_000_000  # Google's recommended payload; a larger row goes alone
    max_result_bytes: int = 512 * 1024 * 1024  # the result as JSON cells, spooled to disk
    spool_memory: int = 8 * 1024 * 1024  # kept in memory below this, on disk above


def tab_title(run_id: str, run_date: dt.date) -> str:
    """The run's tab: its date and a short, stable id of the run, so that a retry of the same
    run (after a crash, say) finds its tab instead of adding a second.

    >>> tab_title("daily-20240501T040000Z", dt.date(2024, 5, 1))
    '2024-05-01 5db95a92'
    """
    return f"{run_date:%Y-%m-%d} {hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def a1(title: str, row: int) -> str:
    """A1 notation for column A of ``row`` (1-based) of tab ``title``, quoted as Sheets wants.

    >>> a1("2024-05-01 it's", 3)
    "'2024-05-01 it''s'!A3"
    """
    return "'" + title.replace("'", "''") + f"'!A{row}"


def to_cell(value: Any) -> str | int | float | bool:
    """A BigQuery value as a cell (written RAW: a text starting with '=' stays text, no formula).

    NULL is an empty cell; integers beyond 2**53, NUMERIC and BIGNUMERIC keep their digits as
    text; dates and times are ISO 8601; BYTES is base64; STRUCT, ARRAY and JSON are JSON text.

    >>> [to_cell(v) for v in (None, 3, 2**60, 1.5, float("nan"), Decimal("1.10"), b"hi", [1, {"a": None}])]
    ['', 3, '1152921504606846976', 1.5, 'NaN', '1.10', 'aGk=', '[1,{"a":null}]']
    """
    if value is None:
        return ""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_MAX_SAFE_INT < value < _MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _json_default(value: Any) -> Any:
    cell = to_cell(value)
    return cell if not isinstance(cell, float) or math.isfinite(cell) else str(cell)


def check_shape(columns: int, total_rows: int | None, limits: SheetsLimits) -> None:
    """What the table's metadata alone can refuse, before a row is read."""
    if columns > limits.max_columns:
        raise SheetsLimitExceeded(
            "columns_per_tab", f"the result has {columns:,} columns; a tab holds at most {limits.max_columns:,}")
    if total_rows is not None and (total_rows + 1) * columns > limits.max_cells:
        raise SheetsLimitExceeded("cells_per_spreadsheet", _cells_message(total_rows, columns, limits))


def _cells_message(rows: int, columns: int, limits: SheetsLimits) -> str:
    return (f"the result is {rows:,} rows x {columns:,} columns = {(rows + 1) * columns:,} cells with its header; "
            f"a spreadsheet holds at most {limits.max_cells:,} cells")


class Spool:
    """The result as cells in request-sized batches, checked against every limit on the way in.

    Rows are read once from BigQuery into a temporary file (memory up to ``spool_memory``, then
    disk), so memory stays bounded and the export writes exactly what was checked.
    """

    def __init__(self, header: Sequence[str], limits: SheetsLimits) -> None:
        self.header = list(header)
        self.limits = limits
        self.rows = 0  # data rows, the header not counted
        self.bytes = 0
        self._batches: list[tuple[int, int, int, int]] = []  # (first sheet row, rows, offset, length)
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=limits.spool_memory)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._first_row = 1

    @property
    def columns(self) -> int:
        return len(self.header)

    async def fill(self, pages: AsyncIterable[Iterable[Sequence[Any]]]) -> Spool:
        check_shape(self.columns, None, self.limits)
        self._add(self.header, label="the header")
        async for page in pages:
            # Converting, encoding and writing a page is CPU and disk work (up to max_result_bytes
            # in all): in a thread, so the event loop (the leader lock's watch, the HTTP API) runs on.
            await asyncio.to_thread(self._add_page, page)
            if (self.rows + 1) * self.columns > self.limits.max_cells:  # stop reading early
                raise SheetsLimitExceeded("cells_per_spreadsheet", _cells_message(self.rows, self.columns, self.limits)
                                          .replace("the result is", "the result is at least"))
        self._flush()
        return self

    def _add_page(self, page: Iterable[Sequence[Any]]) -> None:
        for row in page:
            self.rows += 1
            self._add([to_cell(v) for v in row], label=f"row {self.rows:,}")

    def _add(self, cells: list[Any], *, label: str) -> None:
        if len(cells) != self.columns:
            raise ValueError(f"{label} has {len(cells)} values for {self.columns} columns")
        for i, cell in enumerate(cells):
            if isinstance(cell, str) and len(cell) > self.limits.max_cell_chars:
                raise SheetsLimitExceeded(
                    "characters_per_cell",
                    f"{label}, column {self.header[i]!r}: {len(cell):,} characters; a cell holds at most "
                    f"{self.limits.max_cell_chars:,}")
        # Sized as google-api-python-client sends it (json.dumps, ASCII escapes).
        encoded = json.dumps(cells).encode()
        if len(encoded) + _REQUEST_OVERHEAD > self.limits.max_request_bytes:
            raise SheetsLimitExceeded(
                "request_bytes",
                f"{label} is {len(encoded):,} bytes as JSON; one request to Google Sheets takes at most "
                f"{self.limits.max_request_bytes:,} bytes")
        self.bytes += len(encoded)
        if self.bytes > self.limits.max_result_bytes:
            raise SheetsLimitExceeded(
                "result_bytes", f"the result is over {self.limits.max_result_bytes:,} bytes as cells (the export's limit)")
        if self._pending and self._pending_bytes + len(encoded) + 1 + _REQUEST_OVERHEAD > self.limits.batch_bytes:
            self._flush()
        self._pending.append(encoded)
        self._pending_bytes += len(encoded) + 1

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"[" + b",".join(self._pending) + b"]"
        offset = self._file.seek(0, 2)
        self._file.write(data)
        self._batches.append((self._first_row, len(self._pending), offset, len(data)))
        self._first_row += len(self._pending)
        self._pending, self._pending_bytes = [], 0

    def batches(self) -> Iterator[tuple[int, list[list[Any]]]]:
        """(first sheet row, 1-based; the rows' cells), header first, in order."""
        for first, _, offset, length in self._batches:
            self._file.seek(offset)
            yield first, json.loads(self._file.read(length))

    @property
    def requests(self) -> int:
        return len(self._batches)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class TabPlan:
    """What to do with the spreadsheet's tabs for one export."""

    existing: dict[str, Any] | None  # the run's tab, already there (an earlier attempt): rewritten
    drop_with_add: list[int]  # sheet ids removed together with adding the tab (to make room)
    drop_after: list[int]  # removed once the new tab is written (readers keep N tabs meanwhile)
    cells_after: int  # grid cells of the spreadsheet once done


def plan_tabs(
    sheets: Sequence[dict[str, Any]], title: str, keep_tabs: int, rows: int, columns: int, limits: SheetsLimits
) -> TabPlan:
    """Keep the newest ``keep_tabs`` tabs (the front ones, the run's included) and the run's tab;
    refuse (naming the limit) when the tabs kept and the new one exceed the cells limit.

    >>> tab = lambda i, t, r=1000, c=26: {"sheetId": i, "title": t, "index": i, "gridProperties": {"rowCount": r, "columnCount": c}}
    >>> plan_tabs([tab(0, "Sheet1")], "new", 7, 10, 2, SheetsLimits())
    TabPlan(existing=None, drop_with_add=[0], drop_after=[], cells_after=22)
    >>> plan_tabs([tab(0, "b"), tab(1, "a"), tab(2, "old")], "new", 3, 10, 2, SheetsLimits()).drop_after
    [2]
    """
    ordered = sorted(sheets, key=lambda p: p.get("index", 0))
    existing = next((p for p in ordered if p.get("title") == title), None)
    others = [p for p in ordered if p is not existing]
    placeholders = [p for p in others if p.get("title") == PLACEHOLDER_TAB]
    others = [p for p in others if p not in placeholders]
    kept, dropped = others[: max(keep_tabs - 1, 0)], others[max(keep_tabs - 1, 0):]
    new_cells = grid_rows(rows) * columns
    kept_cells = sum(_cells(p) for p in kept)
    if kept_cells + new_cells > limits.max_cells:
        raise SheetsLimitExceeded(
            "cells_per_spreadsheet",
            f"the {len(kept)} tabs kept hold {kept_cells:,} cells and this result needs {new_cells:,}: a spreadsheet "
            f"holds at most {limits.max_cells:,} cells (keep fewer tabs: sheets_export.keep_tabs)")
    pending = sum(_cells(p) for p in dropped + placeholders)
    make_room = kept_cells + pending + new_cells > limits.max_cells
    drop_now = [p["sheetId"] for p in placeholders] + ([p["sheetId"] for p in dropped] if make_room else [])
    drop_later = [] if make_room else [p["sheetId"] for p in dropped]
    return TabPlan(existing, drop_now, drop_later, kept_cells + new_cells)


def grid_rows(rows: int) -> int:
    """The tab's row count: the header and the rows, exactly (the cells limit counts the grid)."""
    return rows + 1


def _cells(props: dict[str, Any]) -> int:
    grid = props.get("gridProperties") or {}
    return int(grid.get("rowCount", 0)) * int(grid.get("columnCount", 0))

"""The pure half of the Sheets export: cells, batches under the request limit, tabs to keep."""

from __future__ import annotations

import datetime as dt
import doctest
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from maestro.errors_outside import SheetsLimitExceeded
from maestro.events.catalog import TableSpec
from maestro.handlers.transfers import sheets_export, sheets_plan
from maestro.handlers.transfers.sheets_export import check_sheets_export, sheets_changed
from maestro.handlers.transfers.sheets_plan import SheetsLimits, Spool, plan_tabs, tab_title, to_cell


@pytest.mark.parametrize("module", [sheets_plan, sheets_export])
def test_the_examples_in_the_docstrings(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_cells_keep_what_a_spreadsheet_would_lose() -> None:
    when = dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.timezone.utc)
    assert to_cell(when) == "2026-03-01 06:30:00+00:00"
    assert to_cell(dt.date(2026, 3, 1)) == "2026-03-01" and to_cell(dt.time(6, 30)) == "06:30:00"
    assert to_cell(Decimal("12345678901234567890.123456789")) == "12345678901234567890.123456789"
    assert to_cell(-(2**53)) == str(-(2**53)) and to_cell(2**53 - 1) == 2**53 - 1
    assert to_cell(float("-inf")) == "-Infinity" and to_cell(True) is True
    assert to_cell({"at": when, "n": Decimal("1.5"), "ö": b"\x00"}) == '{"at":"2026-03-01 06:30:00+00:00","n":"1.5","ö":"AA=="}'


def test_a_tab_per_run_and_date() -> None:
    assert tab_title("daily-20260301T060000Z", dt.date(2026, 3, 1)) == tab_title("daily-20260301T060000Z", dt.date(2026, 3, 1))
    assert tab_title("daily-20260301T060000Z", dt.date(2026, 3, 1)) != tab_title("hourly-20260301T060000Z", dt.date(2026, 3, 1))


async def _pages(rows: list[tuple[Any, ...]], size: int = 7) -> AsyncIterator[list[tuple[Any, ...]]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


async def test_batches_stay_under_the_request_size_and_cover_every_row_once() -> None:
    rows = [(i, "é" * (i % 50), None) for i in range(500)]
    limits = SheetsLimits(batch_bytes=2_000)
    with Spool(["id", "text", "empty"], limits) as spool:
        await spool.fill(_pages(rows))
        seen: list[list[Any]] = []
        expected_first = 1
        for first_row, values in spool.batches():
            assert first_row == expected_first
            assert len(json.dumps({"values": values})) <= limits.batch_bytes  # as the client sends it
            expected_first += len(values)
            seen.extend(values)
    assert seen == [["id", "text", "empty"]] + [[i, "é" * (i % 50), ""] for i in range(500)]
    assert spool.requests > 10


async def test_a_row_too_large_for_one_request_is_refused_naming_it() -> None:
    limits = SheetsLimits(max_request_bytes=1_000)
    with Spool(["a", "b"], limits) as spool, pytest.raises(SheetsLimitExceeded, match="row 2 is") as refused:
        await spool.fill(_pages([(1, "x"), (2, "y" * 2_000)]))
    assert refused.value.reason == "request_bytes" and "1,000 bytes" in refused.value.message


def _tab(i: int, title: str, rows: int = 10, cols: int = 10) -> dict[str, Any]:
    return {"sheetId": i, "title": title, "index": i, "gridProperties": {"rowCount": rows, "columnCount": cols}}


def test_the_tabs_beyond_the_newest_n_go_after_the_write_unless_their_room_is_needed() -> None:
    tabs = [_tab(0, "d"), _tab(1, "c"), _tab(2, "b"), _tab(3, "a")]
    plan = plan_tabs(tabs, "new", 3, 9, 10, SheetsLimits(max_cells=1_000))
    assert plan.existing is None and plan.drop_with_add == [] and plan.drop_after == [2, 3]
    tight = plan_tabs(tabs, "new", 3, 9, 10, SheetsLimits(max_cells=350))
    assert tight.drop_with_add == [2, 3] and tight.drop_after == [] and tight.cells_after == 300
    with pytest.raises(SheetsLimitExceeded, match="the 2 tabs kept hold 200 cells"):
        plan_tabs(tabs, "new", 3, 9, 10, SheetsLimits(max_cells=250))


def test_the_runs_own_tab_is_rewritten_not_counted_twice() -> None:
    tabs = [_tab(0, "newer"), _tab(1, "mine", 1_000, 26), _tab(2, "old")]
    plan = plan_tabs(tabs, "mine", 2, 9, 10, SheetsLimits(max_cells=300))  # not its 26,000 cells now
    assert plan.existing is not None and plan.existing["sheetId"] == 1
    assert plan.drop_with_add == [] and plan.drop_after == [2] and plan.cells_after == 200


def test_saving_needs_credentials_only_when_the_export_is_added_or_changed() -> None:
    spec = TableSpec(dataset="d", name="t", query="SELECT 1", sheets_export={"keep_tabs": 3})
    problem = check_sheets_export(spec, google_credentials=False)
    assert problem is not None and problem.code == "sheets_needs_google_credentials" and problem.status == 422
    stored = spec.to_payload()
    assert not sheets_changed(spec, stored) and not sheets_changed(spec, spec)
    assert sheets_changed(spec, None) and sheets_changed(spec, {**stored, "sheets_export": None})
    assert sheets_changed(spec, {**stored, "sheets_export": {"keep_tabs": 4}})
    assert not sheets_changed(spec, {**stored, "sheets_export": {"keep_tabs": 3}})  # defaults filled in
    assert not sheets_changed(TableSpec(dataset="d", name="t", query="SELECT 1"), stored)

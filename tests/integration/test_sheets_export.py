"""The Sheets export through the real google-api-python-client and google-auth, against the local
Sheets/Drive/OAuth fake (tests/fakes/sheets_api.py), and from the local BigQuery's rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fakes.sheets_api import FakeGoogle, Quotas, Sheet

from maestro.adapters.sheets import RetryPolicy, SheetsClient
from maestro.errors_outside import SheetsError, SheetsLimitExceeded
from maestro.events.catalog import TableSpec
from maestro.handlers.transfers.sheets_export import export_to_sheet
from maestro.handlers.transfers.sheets_plan import SheetsLimits, tab_title

ACCOUNT = "exporter@maestro-test.iam.gserviceaccount.com"
FAST = RetryPolicy(attempts=6, base=0.01, cap=0.05)
DAY = dt.date(2026, 3, 1)


def _key() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, public


@pytest.fixture(scope="module")
def keypair() -> tuple[str, bytes]:
    return _key()


@pytest.fixture
async def fake(keypair: tuple[str, bytes]) -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle() as server:
        server.register_key(ACCOUNT, keypair[1])
        yield server


def key_info(fake: FakeGoogle, pem: str, email: str = ACCOUNT) -> dict[str, Any]:
    """A service-account JSON key as Google issues it, whose token_uri is the fake's."""
    return {"type": "service_account", "project_id": "maestro-test", "private_key_id": "k1", "private_key": pem,
            "client_email": email, "client_id": "1", "token_uri": fake.token_uri}


@pytest.fixture
async def sheets(fake: FakeGoogle, keypair: tuple[str, bytes]) -> AsyncIterator[SheetsClient]:
    async with SheetsClient(key_info(fake, keypair[0]), endpoint=fake.base_url, retry=FAST) as client:
        yield client


def spec(**export: Any) -> TableSpec:
    return TableSpec(dataset="mart", name="daily_sales", query="SELECT 1 AS x", sheets_export=export)


async def pages(rows: Sequence[Sequence[Any]], size: int = 2) -> AsyncIterator[list[Sequence[Any]]]:
    for i in range(0, len(rows), size):
        yield list(rows[i:i + size])


ROWS = [(1, "north", 10.5, None), (2, "south", 3.25, True), (3, "=SUM(A1)", 0.0, False)]
COLUMNS = ["id", "region", "amount", "flag"]


async def export(sheets: SheetsClient, table: TableSpec, rows: Iterable[Sequence[Any]] = ROWS, *,
                 run_id: str = "daily-20260301T060000Z", day: dt.date = DAY, **kw: Any) -> Any:
    return await export_to_sheet(sheets, table, COLUMNS, pages(list(rows)), run_id=run_id, run_date=day, **kw)


async def test_first_export_creates_shares_and_writes_a_dated_tab(fake: FakeGoogle, sheets: SheetsClient) -> None:
    recorded: list[str] = []

    async def record(spreadsheet_id: str) -> None:
        recorded.append(spreadsheet_id)

    result = await export(sheets, spec(), share_with=["example.com"], on_created=record)
    assert result.created and recorded == [result.spreadsheet_id] and not result.rewritten
    book = fake.spreadsheets[result.spreadsheet_id]
    assert book.title == "mart.daily_sales" and book.owner == ACCOUNT
    assert [(p["type"], p["role"], p["domain"]) for p in fake.permissions[result.spreadsheet_id]] == [
        ("domain", "reader", "example.com")]
    title = tab_title("daily-20260301T060000Z", DAY)
    assert fake.tabs(result.spreadsheet_id) == [title] and title.startswith("2026-03-01 ")  # Google's Sheet1 removed
    assert fake.values(result.spreadsheet_id, title) == [
        COLUMNS, [1, "north", 10.5, ""], [2, "south", 3.25, True], [3, "=SUM(A1)", 0, False]]
    sheet = book.find(title)
    assert (sheet.rows, sheet.cols, sheet.frozen_rows) == (4, 4, 1)  # the grid is the result, exactly
    assert result.rows == 3 and result.cells == 16 and result.requests == len(fake.requests)
    assert fake.token_requests == 1  # one token, reused


async def test_a_failed_sharing_keeps_the_spreadsheet_and_the_next_attempt_shares_it(
    fake: FakeGoogle, sheets: SheetsClient,
) -> None:
    """The spreadsheet is handed out as soon as it exists: a sharing refused (a domain policy)
    leaves no orphan, and the next attempt shares that one instead of creating another."""
    recorded: list[str] = []
    shared: list[str] = []

    async def record(spreadsheet_id: str) -> None:
        recorded.append(spreadsheet_id)

    async def mark_shared(spreadsheet_id: str) -> None:
        shared.append(spreadsheet_id)

    fake.fail_when = lambda method, path, n: 403 if path.endswith("/permissions") else None
    with pytest.raises(SheetsError) as failed:
        await export(sheets, spec(), share_with=["example.com"], on_created=record, on_shared=mark_shared)
    assert failed.value.reason == "permission_denied" and len(recorded) == 1 and shared == []
    assert failed.value.spreadsheet_id == recorded[0]
    fake.fail_when = None
    result = await export(sheets, spec(), share_with=["example.com"], spreadsheet_id=recorded[0], unshared=True,
                          on_created=record, on_shared=mark_shared)
    assert result.spreadsheet_id == recorded[0] and not result.created and shared == recorded
    assert list(fake.spreadsheets) == recorded  # one spreadsheet in all
    assert [p["domain"] for p in fake.permissions[recorded[0]]] == ["example.com"]


async def test_a_create_whose_answer_may_be_lost_is_not_sent_again(fake: FakeGoogle, sheets: SheetsClient) -> None:
    """A 5xx (or a timeout) on the create may have created a spreadsheet: the client does not
    send it again (the attempt fails retryable); a 429 says nothing was done, and is retried."""
    creates = lambda: sum(1 for m, p in fake.requests if (m, p) == ("POST", "/v4/spreadsheets"))  # noqa: E731
    fake.fail_next = [503]
    with pytest.raises(SheetsError) as failed:
        await export(sheets, spec())
    assert failed.value.retryable and creates() == 1
    fake.fail_next = [429]
    result = await export(sheets, spec())
    assert result.created and creates() == 3 and len(fake.spreadsheets) == 1


async def test_each_run_adds_a_tab_in_front_and_the_newest_n_are_kept(fake: FakeGoogle, sheets: SheetsClient) -> None:
    first = await export(sheets, spec(keep_tabs=3))
    table = spec(keep_tabs=3, sheet_id=first.spreadsheet_id)
    runs = [(f"daily-2026030{d}T060000Z", dt.date(2026, 3, d)) for d in range(2, 6)]
    for run_id, day in runs:
        result = await export(sheets, table, [(d, "r", 1.0, None) for d in range(day.day)], run_id=run_id, day=day)
        assert not result.created and result.spreadsheet_id == first.spreadsheet_id
    assert fake.tabs(first.spreadsheet_id) == [tab_title(r, d) for r, d in reversed(runs[-3:])]
    assert len(fake.spreadsheets) == 1 and result.removed_tabs == 1
    assert len(fake.values(first.spreadsheet_id, tab_title(*runs[-1]))) == 1 + 5


async def test_a_retried_run_rewrites_its_tab_instead_of_adding_a_second(fake: FakeGoogle, sheets: SheetsClient) -> None:
    first = await export(sheets, spec())
    table = spec(sheet_id=first.spreadsheet_id)
    title = tab_title("daily-20260302T060000Z", DAY)
    many = [(i, f"row {i}", float(i), None) for i in range(40)]
    # The run's export dies after its tab was added and a few batches written (a refused request
    # stands in for a crash: either way the tab stays half-written).
    writes = 0

    def die_on_the_fourth_write(method: str, path: str, n: int) -> int | None:
        nonlocal writes
        writes += method == "PUT"
        return 400 if method == "PUT" and writes == 4 else None

    fake.fail_when = die_on_the_fourth_write
    small = SheetsLimits(batch_bytes=400)
    with pytest.raises(SheetsError) as failed:
        await export(sheets, table, many, run_id="daily-20260302T060000Z", limits=small)
    assert not failed.value.retryable and "refused by the test" in failed.value.message
    assert fake.tabs(first.spreadsheet_id)[0] == title
    assert 1 < len(fake.values(first.spreadsheet_id, title)) < 41  # half-written
    fake.fail_when = None
    # The retry of the same run, with a result that has changed meanwhile (fewer rows): one tab.
    again = await export(sheets, table, many[:7], run_id="daily-20260302T060000Z", limits=small)
    assert again.rewritten and fake.tabs(first.spreadsheet_id).count(title) == 1
    assert fake.tabs(first.spreadsheet_id) == [title, tab_title("daily-20260301T060000Z", DAY)]
    assert fake.values(first.spreadsheet_id, title) == [COLUMNS] + [[i, f"row {i}", i, ""] for i in range(7)]


async def test_an_add_whose_answer_was_lost_is_adopted(fake: FakeGoogle, sheets: SheetsClient) -> None:
    """Between the export's read of the tabs and its addSheet, the run's tab appeared (an earlier
    attempt's addSheet applied, its answer lost): the title is taken, and the export rewrites it."""
    first = await export(sheets, spec())
    table = spec(sheet_id=first.spreadsheet_id)
    title = tab_title("daily-20260303T060000Z", DAY)
    book = fake.spreadsheets[first.spreadsheet_id]

    def tab_appears_before_the_add(method: str, path: str, n: int) -> None:
        if path.endswith(":batchUpdate") and all(s.title != title for s in book.sheets):
            book.sheets.insert(0, Sheet(424242, title, 3, 3))
        return None

    fake.fail_when = tab_appears_before_the_add
    result = await export(sheets, table, run_id="daily-20260303T060000Z")
    assert result.rewritten and result.tab_id == 424242 and fake.tabs(first.spreadsheet_id).count(title) == 1
    assert 400 in fake.answered  # the addSheet that found the title taken
    assert fake.values(first.spreadsheet_id, title) == [COLUMNS, [1, "north", 10.5, ""], [2, "south", 3.25, True],
                                                        [3, "=SUM(A1)", 0, False]]


async def test_a_tab_removal_whose_answer_was_lost_is_taken_as_done(fake: FakeGoogle, sheets: SheetsClient) -> None:
    """The old tab's deleteSheet is applied but its answer lost (a 503 after the change, so the
    client retries): the retry finds no such tab, which means the removal happened."""
    first = await export(sheets, spec(keep_tabs=1))
    table = spec(sheet_id=first.spreadsheet_id, keep_tabs=1)
    book = fake.spreadsheets[first.spreadsheet_id]
    old_title = first.tab
    batches = 0

    def delete_applied_then_lost(method: str, path: str, n: int) -> int | None:
        nonlocal batches
        if path.endswith(":batchUpdate"):
            batches += 1
            if batches == 2:  # the second export's removal of the old tab
                book.sheets[:] = [sheet for sheet in book.sheets if sheet.title != old_title]
                return 503
        return None

    fake.fail_when = delete_applied_then_lost
    result = await export(sheets, table, run_id="daily-20260304T060000Z")
    assert fake.tabs(first.spreadsheet_id) == [tab_title("daily-20260304T060000Z", DAY)]
    assert result.removed_tabs == 1 and 503 in fake.answered and 400 in fake.answered


@pytest.mark.parametrize(("limit", "rows", "columns", "total_rows"), [
    ("cells_per_spreadsheet", [], COLUMNS, 2_500_000),
    ("characters_per_cell", [(1, "x" * 50_001, 1.0, None)], COLUMNS, None),
    ("request_bytes", [tuple("y" * 49_000 for _ in range(220))], [f"c{i}" for i in range(220)], None),
    ("columns_per_tab", [], [f"c{i}" for i in range(18_279)], None),
])
async def test_a_result_beyond_the_limits_is_refused_before_any_call(
    fake: FakeGoogle, sheets: SheetsClient, limit: str, rows: list[Any], columns: list[str], total_rows: int | None,
) -> None:
    with pytest.raises(SheetsLimitExceeded) as refused:
        await export_to_sheet(sheets, spec(), columns, pages(rows), run_id="r1", run_date=DAY, total_rows=total_rows)
    assert refused.value.reason == limit and not refused.value.retryable
    assert any(figure in refused.value.message for figure in ("10,000,000", "50,000", "10,485,760", "18,278"))
    assert fake.requests == [] and fake.token_requests == 0


async def test_cells_counted_over_the_rows_read_when_the_size_was_not_given(fake: FakeGoogle, sheets: SheetsClient) -> None:
    rows = [(i, "r", 1.0, None) for i in range(30)]
    with pytest.raises(SheetsLimitExceeded, match="at most 100 cells") as refused:
        await export(sheets, spec(), rows, limits=SheetsLimits(max_cells=100))
    assert refused.value.reason == "cells_per_spreadsheet" and fake.requests == []


async def test_the_tabs_kept_count_toward_the_cells_limit(fake: FakeGoogle, sheets: SheetsClient) -> None:
    first = await export(sheets, spec())  # 16 cells
    table = spec(sheet_id=first.spreadsheet_id)
    seen = len(fake.requests)
    with pytest.raises(SheetsLimitExceeded, match="keep_tabs") as refused:
        await export(sheets, table, run_id="r2", limits=SheetsLimits(max_cells=20))
    assert refused.value.reason == "cells_per_spreadsheet"
    assert [m for m, _ in fake.requests[seen:]] == ["GET"]  # read, never written
    # Keeping one tab (the new one) leaves room: the old tab goes in the same atomic change.
    result = await export(sheets, spec(sheet_id=first.spreadsheet_id, keep_tabs=1), run_id="r2",
                          limits=SheetsLimits(max_cells=20))
    assert fake.tabs(first.spreadsheet_id) == [result.tab] and result.removed_tabs == 1


async def test_quota_answers_are_retried_with_backoff(fake: FakeGoogle, sheets: SheetsClient) -> None:
    first = await export(sheets, spec())  # (a create is retried only after a 429: see below)
    before = len(fake.answered)
    fake.fail_next = [429, 429, 503]
    result = await export(sheets, spec(sheet_id=first.spreadsheet_id), run_id="daily-20260305T060000Z")
    assert fake.answered[before:before + 3] == [429, 429, 503] and sheets.retries == 3
    assert fake.values(result.spreadsheet_id, result.tab)[0] == COLUMNS


async def test_the_per_minute_quota_is_waited_out_as_retry_after_says(fake: FakeGoogle, sheets: SheetsClient) -> None:
    fake.quotas = Quotas(per_user=3, window=1.0, retry_after=1)  # a one-second "minute"
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    sheets._sleep = sleep
    result = await export(sheets, spec(), limits=SheetsLimits(batch_bytes=300))
    assert 429 in fake.answered and slept and set(slept) == {1.0}  # Retry-After, not our backoff
    assert len(fake.values(result.spreadsheet_id, result.tab)) == 4


async def test_quota_still_exhausted_after_the_retries_is_a_retryable_failure(fake: FakeGoogle, sheets: SheetsClient) -> None:
    fake.fail_next = [429] * 10
    with pytest.raises(SheetsError) as failed:
        await export(sheets, spec())
    assert failed.value.reason == "quota_exceeded" and failed.value.retryable
    assert "RESOURCE_EXHAUSTED" not in failed.value.message and "Quota exceeded" in failed.value.message
    assert fake.spreadsheets == {}


async def test_a_key_google_does_not_know_is_refused_and_not_retried(fake: FakeGoogle) -> None:
    async with SheetsClient(key_info(fake, _key()[0]), endpoint=fake.base_url, retry=FAST) as stranger:  # wrong key
        with pytest.raises(SheetsError) as failed:
            await export(stranger, spec())
    assert failed.value.reason == "unauthenticated" and not failed.value.retryable
    assert "Invalid JWT Signature" in failed.value.message
    assert fake.requests == [] and fake.spreadsheets == {} and fake.token_requests == 1


async def test_a_revoked_token_is_refreshed_and_the_export_goes_on(fake: FakeGoogle, sheets: SheetsClient) -> None:
    first = await export(sheets, spec())
    fake.tokens.clear()  # every token Google issued is now invalid: the next call gets a 401
    result = await export(sheets, spec(sheet_id=first.spreadsheet_id), run_id="r2")
    assert 401 in fake.answered and fake.token_requests == 2
    assert fake.tabs(first.spreadsheet_id)[0] == result.tab


async def test_a_spreadsheet_of_another_account_is_refused(fake: FakeGoogle, sheets: SheetsClient, keypair: Any) -> None:
    pem, public = _key()
    fake.register_key("other@maestro-test.iam.gserviceaccount.com", public)
    async with SheetsClient(key_info(fake, pem, "other@maestro-test.iam.gserviceaccount.com"),
                            endpoint=fake.base_url) as other:
        theirs = await export(other, spec())
    with pytest.raises(SheetsError) as failed:
        await export(sheets, spec(sheet_id=theirs.spreadsheet_id), run_id="r2")
    assert failed.value.reason == "permission_denied" and not failed.value.retryable


async def test_a_deleted_spreadsheet_is_named_with_what_to_do(fake: FakeGoogle, sheets: SheetsClient) -> None:
    first = await export(sheets, spec())
    del fake.spreadsheets[first.spreadsheet_id]  # a person deleted it
    with pytest.raises(SheetsError, match="clear sheets_export.sheet_id") as failed:
        await export(sheets, spec(sheet_id=first.spreadsheet_id), run_id="r2")
    assert failed.value.reason == "spreadsheet_gone" and not failed.value.retryable


async def test_rows_read_from_bigquery_reach_the_sheet(fake: FakeGoogle, sheets: SheetsClient, local_stack: Any) -> None:
    from maestro.adapters.bigquery_rows import table_rows
    from maestro.adapters.localstack import bigquery_client

    bq = bigquery_client(local_stack)
    dataset = f"sheets_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(bq.create_dataset, dataset)
    table = f"{local_stack.project}.{dataset}.result"
    sql = (f"CREATE TABLE `{table}` AS SELECT n AS id, CONCAT('name ', CAST(n AS STRING)) AS name, "
           "IF(MOD(n, 2) = 0, NULL, n * 1.5) AS half, DATE '2026-03-01' AS day "
           "FROM UNNEST(GENERATE_ARRAY(1, 2500)) AS n")
    await asyncio.to_thread(lambda: bq.query(sql).result())
    rows = await table_rows(bq, table, page_size=1000)
    assert [c.name for c in rows.columns] == ["id", "name", "half", "day"] and rows.total_rows == 2500
    result = await export_to_sheet(sheets, spec(), rows.columns, rows.pages, run_id="r1", run_date=DAY,
                                   total_rows=rows.total_rows, limits=SheetsLimits(batch_bytes=20_000))
    values = fake.values(result.spreadsheet_id, result.tab)
    assert len(values) == 2501 and values[0] == ["id", "name", "half", "day"]
    assert sorted(values[1:], key=lambda r: r[0])[:2] == [[1, "name 1", 1.5, "2026-03-01"], [2, "name 2", "", "2026-03-01"]]
    assert result.requests > 4  # header and rows in several batches
    bq.close()

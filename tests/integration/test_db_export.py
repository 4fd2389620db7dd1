"""Database export behaviour, on a real PostgreSQL and a real MariaDB: the atomic swap under a
concurrent reader, failures (a bad value, a killed connection, a limit) that leave the previous
table intact and no staging table, upsert by keys, and retries of one export id."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomysql
import asyncpg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from maestro.adapters.localstack import LocalStack, storage_client
from maestro.adapters.targets.common import MARKER_TABLE, staging_name
from maestro.errors_outside import ExportFailed
from maestro.events.catalog import TableSpec
from maestro.handlers.transfers.db_export import ExportDatabase, ExportLimits, export_table
from db_targets import csv_bytes, mysql_database, mysql_fetch, mysql_tables, pg_fetch, pg_tables, put_object
from sources import MYSQL

SCHEMA = [{"name": "id", "type": "INT64", "mode": "REQUIRED"}, {"name": "label", "type": "STRING"}]


def spec(**export: Any) -> TableSpec:
    return TableSpec.model_validate({
        "dataset": "mart", "name": "sales", "query": "SELECT 1",
        "extract": {"format": "csv", "compression": "none"}, "db_export": {"database": "mart", **export},
    })


def rows_csv(start: int, count: int, label: str = "v") -> bytes:
    ids = pa.array(range(start, start + count), pa.int64())
    labels = pa.array([f"{label}{i}" for i in range(start, start + count)])
    out = io.BytesIO()
    pa_csv.write_csv(pa.table({"id": ids, "label": labels}), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def storage(local_stack: LocalStack) -> Iterator[Any]:
    client = storage_client(local_stack)
    yield client
    client.close()


@pytest.fixture(params=["postgres", "mysql"])
async def target(request: pytest.FixtureRequest, fresh_database: tuple[str, str]) -> AsyncIterator[ExportDatabase]:
    if request.param == "postgres":
        yield ExportDatabase("mart", "postgres", fresh_database[0], None, export=True)
    else:
        async with mysql_database() as created:
            yield created


async def fetch(target: ExportDatabase, sql: str) -> list[tuple[Any, ...]]:
    if target.driver == "postgres":
        return [tuple(r) for r in await pg_fetch(target, sql)]
    return await mysql_fetch(target, sql)


async def tables(target: ExportDatabase) -> set[str]:
    return await (pg_tables(target) if target.driver == "postgres" else mysql_tables(target))


async def contents(target: ExportDatabase) -> list[tuple[Any, ...]]:
    return await fetch(target, "SELECT id, label FROM sales ORDER BY id")


async def test_replace_swaps_atomically_under_a_concurrent_reader(storage: Any, target: ExportDatabase) -> None:
    await seed(storage, target, 1000)
    uris = [await put_object(storage, rows_csv(1 + i * 60_000, 60_000, "new"), "csv") for i in range(3)]
    seen: list[int] = []
    done = asyncio.Event()

    async def read() -> None:
        if target.driver == "postgres":
            conn = await asyncpg.connect(target.dsn)
            query = conn.fetchval
        else:
            my = await aiomysql.connect(**MYSQL, db=target.dsn.rsplit("/", 1)[1], autocommit=True)

            async def query(sql: str) -> int:
                async with my.cursor() as cur:
                    await cur.execute(sql)
                    return (await cur.fetchone())[0]
        try:
            while not done.is_set():
                seen.append(await query("SELECT count(*) FROM sales"))  # an error fails the test
                await asyncio.sleep(0)
        finally:
            await conn.close() if target.driver == "postgres" else my.close()

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    result = await export_table(target, spec(), SCHEMA, uris, storage, export_id="run-2/sales")
    await asyncio.sleep(0.05)
    done.set()
    await reader
    assert result.rows == 180_000 and not result.already_done
    assert set(seen) <= {1000, 180_000} and seen[0] == 1000 and seen[-1] == 180_000
    assert await tables(target) == {"sales", MARKER_TABLE}


async def test_a_bad_value_leaves_the_previous_table_and_no_staging(storage: Any, target: ExportDatabase) -> None:
    await seed(storage, target)
    before = await contents(target)
    good = await put_object(storage, rows_csv(1, 50_000), "csv")
    bad = await put_object(storage, csv_bytes(["id", "label"], [["7", "x"], [None, "null id"]]), "csv")
    with pytest.raises(ExportFailed) as caught:
        await export_table(target, spec(), SCHEMA, [good, bad], storage, export_id="run-3/sales")
    assert caught.value.reason == "bad_value" and not caught.value.retryable
    assert await contents(target) == before
    assert await tables(target) == {"sales", MARKER_TABLE}


async def test_a_killed_connection_leaves_the_previous_table_and_no_staging(storage: Any, target: ExportDatabase) -> None:
    await seed(storage, target)
    before = await contents(target)
    uris = [await put_object(storage, rows_csv(1 + i * 200_000, 200_000), "csv") for i in range(4)]
    export = asyncio.create_task(export_table(target, spec(), SCHEMA, uris, storage, export_id="run-4/sales"))
    killed = await _kill_export_connection(target)
    with pytest.raises(ExportFailed) as caught:
        await export
    assert killed, "the export finished before its connection could be killed"
    assert caught.value.retryable and caught.value.reason in ("connection_lost", "target_unavailable")
    assert await contents(target) == before
    assert await tables(target) == {"sales", MARKER_TABLE}
    # The retry of the same export succeeds and writes the whole table once.
    result = await export_table(target, spec(), SCHEMA, uris, storage, export_id="run-4/sales")
    assert result.rows == 800_000 and not result.already_done
    assert (await fetch(target, "SELECT count(*), count(DISTINCT id) FROM sales"))[0] == (800_000, 800_000)


async def _kill_export_connection(target: ExportDatabase) -> bool:
    """Kill the export's connection once it is loading rows; True when it was killed."""
    for _ in range(400):
        if target.driver == "postgres":
            rows = await pg_fetch(target, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = 'maestro-export' AND query LIKE 'COPY%'")
            if rows:
                return True
        else:
            ids = await mysql_fetch(target, "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOAD DATA%'")
            if ids:
                await mysql_fetch(target, f"KILL CONNECTION {ids[0][0]}")
                return True
        await asyncio.sleep(0.01)
    return False


async def seed(storage: Any, target: ExportDatabase, count: int = 3, **export: Any) -> None:
    uri = await put_object(storage, rows_csv(1, count, "old"), "csv")
    await export_table(target, spec(**export), SCHEMA, [uri], storage, export_id=f"seed-{export}")


async def test_upsert_inserts_and_updates_by_key(storage: Any, target: ExportDatabase) -> None:
    await seed(storage, target, 3, key_columns=["id"])  # replace: ids 1..3 "old", id the primary key
    uri = await put_object(storage, csv_bytes(["id", "label"], [["2", "two"], ["4", "four"]]), "csv")
    result = await export_table(target, spec(mode="upsert", key_columns=["id"]), SCHEMA, [uri], storage,
                                export_id="run-5/sales")
    assert result.rows == 2
    assert await contents(target) == [(1, "old1"), (2, "two"), (3, "old3"), (4, "four")]
    assert await tables(target) == {"sales", MARKER_TABLE}


async def test_upsert_into_a_table_without_a_key_is_refused(storage: Any, target: ExportDatabase) -> None:
    await seed(storage, target, 3)  # no key_columns: no primary key
    uri = await put_object(storage, csv_bytes(["id", "label"], [["2", "two"]]), "csv")
    with pytest.raises(ExportFailed) as caught:
        await export_table(target, spec(mode="upsert", key_columns=["id"]), SCHEMA, [uri], storage, export_id="r5b")
    assert caught.value.reason == "target_refused" and "no primary key or unique index on (id)" in caught.value.message
    assert await contents(target) == [(1, "old1"), (2, "old2"), (3, "old3")]
    assert await tables(target) == {"sales", MARKER_TABLE}


async def test_upsert_creates_the_table_with_its_key_and_refuses_duplicate_keys(storage: Any, target: ExportDatabase) -> None:
    uri = await put_object(storage, csv_bytes(["id", "label"], [["1", "a"]]), "csv")
    await export_table(target, spec(mode="upsert", key_columns=["id"]), SCHEMA, [uri], storage, export_id="r6")
    twice = await put_object(storage, csv_bytes(["id", "label"], [["1", "b"], ["1", "c"]]), "csv")
    with pytest.raises(ExportFailed) as caught:
        await export_table(target, spec(mode="upsert", key_columns=["id"]), SCHEMA, [twice], storage, export_id="r7")
    assert caught.value.reason == "bad_value"
    assert await contents(target) == [(1, "a")]
    assert await tables(target) == {"sales", MARKER_TABLE}


async def test_a_retry_of_the_same_export_id_writes_nothing_again(storage: Any, target: ExportDatabase) -> None:
    first = await put_object(storage, rows_csv(1, 5, "first"), "csv")
    done = await export_table(target, spec(key_columns=["id"]), SCHEMA, [first], storage, export_id="run-8/sales")
    assert not done.already_done
    other = await put_object(storage, rows_csv(1, 2, "other"), "csv")
    again = await export_table(target, spec(key_columns=["id"]), SCHEMA, [other], storage, export_id="run-8/sales")
    assert again.already_done and again.rows == 5
    assert await contents(target) == [(i, f"first{i}") for i in range(1, 6)]
    upsert = spec(mode="upsert", key_columns=["id"])
    await export_table(target, upsert, SCHEMA, [other], storage, export_id="run-9/sales")
    assert (await export_table(target, upsert, SCHEMA, [first], storage, export_id="run-9/sales")).already_done
    assert await contents(target) == [(1, "other1"), (2, "other2")] + [(i, f"first{i}") for i in range(3, 6)]


async def test_a_staging_table_left_by_a_crash_is_dropped_by_the_retry(storage: Any) -> None:
    async with mysql_database() as target:
        await seed(storage, target)
        await mysql_fetch(target, f"CREATE TABLE `{staging_name('run-10/sales')}` (junk INT)")
        uri = await put_object(storage, rows_csv(1, 4, "new"), "csv")
        await export_table(target, spec(), SCHEMA, [uri], storage, export_id="run-10/sales")
        assert await contents(target) == [(i, f"new{i}") for i in range(1, 5)]
        assert await tables(target) == {"sales", MARKER_TABLE}


async def test_mysql_finishes_a_swap_a_crash_interrupted(storage: Any) -> None:
    """A crash after the staging table was loaded and recorded, before the rename: the retry
    renames it in (it does not load again) and the export counts once."""
    async with mysql_database() as target:
        await seed(storage, target)
        stage = staging_name("run-11/sales")
        await mysql_fetch(target, f"CREATE TABLE `{stage}` (id BIGINT NOT NULL, label LONGTEXT)")
        await mysql_fetch(target, f"INSERT INTO `{stage}` VALUES (9, 'loaded before the crash')")
        await mysql_fetch(target, f"INSERT INTO {MARKER_TABLE} VALUES ('run-11/sales', 'sales', 1, 'loaded', UTC_TIMESTAMP(6))")
        uri = await put_object(storage, rows_csv(1, 4, "new"), "csv")
        result = await export_table(target, spec(), SCHEMA, [uri], storage, export_id="run-11/sales")
        assert result.already_done and result.rows == 1
        assert await contents(target) == [(9, "loaded before the crash")]
        assert await tables(target) == {"sales", MARKER_TABLE}


async def test_limits_fail_naming_the_limit_and_leave_the_table(storage: Any, target: ExportDatabase) -> None:
    await seed(storage, target)
    before = await contents(target)
    uri = await put_object(storage, rows_csv(1, 20_000), "csv")
    with pytest.raises(ExportFailed) as caught:
        await export_table(target, spec(), SCHEMA, [uri], storage, export_id="r12", limits=ExportLimits(max_rows=10_000))
    assert caught.value.reason == "limit_exceeded" and "max_rows" in caught.value.message
    with pytest.raises(ExportFailed) as caught:
        await export_table(target, spec(), SCHEMA, [uri], storage, export_id="r13", limits=ExportLimits(max_bytes=1000))
    assert caught.value.reason == "limit_exceeded" and "max_bytes" in caught.value.message
    assert await contents(target) == before
    assert await tables(target) == {"sales", MARKER_TABLE}


@pytest.mark.parametrize(("change", "reason"), [
    ({"export": False}, "not_export_enabled"),
    ({"table": "x" * 70}, "bad_name"),
])
async def test_what_the_target_cannot_take_is_refused_before_writing(
    storage: Any, target: ExportDatabase, change: dict[str, Any], reason: str
) -> None:
    uri = await put_object(storage, rows_csv(1, 3), "csv")
    database = ExportDatabase(target.name, target.driver, target.dsn, None, export=change.get("export", True))
    table_spec = spec(**({"table": change["table"]} if "table" in change else {}))
    with pytest.raises(ExportFailed) as caught:
        await export_table(database, table_spec, SCHEMA, [uri], storage, export_id="r14")
    assert caught.value.reason == reason and not caught.value.retryable
    assert await tables(target) == set()


async def test_a_missing_extract_file_fails_clearly(storage: Any, target: ExportDatabase) -> None:
    with pytest.raises(ExportFailed) as caught:
        await export_table(target, spec(), SCHEMA, ["gs://maestro-exports-test/nothing/here.csv"], storage,
                           export_id="r15")
    assert caught.value.reason == "extract_missing"


async def test_a_table_larger_than_a_protocol_packet_loads_whole(storage: Any, target: ExportDatabase) -> None:
    """MySQL: over 16 MiB (one packet, and MariaDB's max_allowed_packet) the rows are spooled
    into several files cut at row ends; PostgreSQL streams them in one COPY."""
    count = 40_000
    labels = pa.array([f"{i:08d}" + "x" * 600 for i in range(count)])
    out = io.BytesIO()
    pa_csv.write_csv(pa.table({"id": pa.array(range(count), pa.int64()), "label": labels}), out)
    assert out.tell() > 20 * 1024 * 1024
    uri = await put_object(storage, out.getvalue(), "csv")
    result = await export_table(target, spec(), SCHEMA, [uri], storage, export_id="r16")
    assert result.rows == count
    assert (await fetch(target, "SELECT count(*), sum(length(label)) FROM sales"))[0] == (count, count * 608)


async def test_concurrent_first_exports_into_a_fresh_schema_both_succeed(storage: Any, fresh_database) -> None:
    """Two tables of one run export at once into a schema that has no marker table yet (and two
    upserts create one target table at once): neither waits for the other's whole COPY only to
    fail on the catalog's unique index."""
    target = ExportDatabase("mart", "postgres", fresh_database[0], None, export=True)
    big = [await put_object(storage, rows_csv(1 + i * 60_000, 60_000, "r"), "csv") for i in range(2)]

    def named(name: str, **export: Any) -> TableSpec:
        return TableSpec.model_validate({**spec(**export).model_dump(), "name": name})

    first, second = await asyncio.gather(
        export_table(target, named("sales"), SCHEMA, big, storage, export_id="run-20/sales"),
        export_table(target, named("refunds"), SCHEMA, big[:1], storage, export_id="run-20/refunds"),
    )
    assert (first.rows, second.rows) == (120_000, 60_000)
    upsert = {"mode": "upsert", "key_columns": ["id"]}
    a, b = await asyncio.gather(
        export_table(target, named("merged", **upsert), SCHEMA, big[:1], storage, export_id="run-21/merged"),
        export_table(target, named("merged", **upsert), SCHEMA, big[1:], storage, export_id="run-22/merged"),
    )
    assert a.rows == b.rows == 60_000
    assert await fetch(target, "SELECT count(*) FROM merged") == [(120_000,)]


async def test_mysql_sends_no_local_file_but_the_one_being_loaded(tmp_path) -> None:
    """The server names the file a LOAD DATA LOCAL sends. Asked (by a real MariaDB, here through
    a statement naming another path) for anything but the spooled file, the connection refuses
    and closes; outside a load every request is refused."""
    from maestro.adapters.targets import mysql as mysql_target

    secret = tmp_path / "secret.txt"
    secret.write_text("1\tleaked\n")
    spooled = tmp_path / "spooled.tsv"
    spooled.write_text("2\tmine\n")
    async with mysql_database() as target:
        await mysql_fetch(target, "CREATE TABLE t (id INT, v TEXT)")
        load = "LOAD DATA LOCAL INFILE %s INTO TABLE t"
        async with mysql_target.open_target(target.dsn) as writer:
            with writer._conn.loading(spooled):
                with pytest.raises(ExportFailed) as refused:
                    await writer._run(load, (str(secret),))
            assert refused.value.reason == "target_refused" and "other than the one being loaded" in refused.value.message
            assert writer._conn.closed
        async with mysql_target.open_target(target.dsn) as writer:
            with pytest.raises(RuntimeError):  # no load under way: aiomysql refuses the request itself
                await writer._run(load, (str(secret),))
        async with mysql_target.open_target(target.dsn) as writer:
            with writer._conn.loading(spooled):
                count, _, _ = await writer._run(load, (str(spooled),))
            assert count == 1
        assert await mysql_fetch(target, "SELECT id, v FROM t") == [(2, "mine")]

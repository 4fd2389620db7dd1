"""Import tables in runs, end to end: a real source database -> Parquet in the local GCS -> a load
job on the local BigQuery; full and incremental, PostgreSQL and MariaDB, the watermark only in the
load's success, files deleted, descendants waiting for the load and isolated by its failure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomysql
import asyncpg
import pytest

from integration.test_runs import _finished, _rows
from sources import mysql_execute


@pytest.fixture
async def pg_source(fresh_database: tuple[str, str]) -> AsyncIterator[str]:
    dsn, _ = fresh_database
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE SCHEMA shop")
        await conn.execute(
            "CREATE TABLE shop.orders (id bigserial PRIMARY KEY, amount numeric(10,2), note text, "
            "at timestamptz DEFAULT now())")
        await conn.execute("INSERT INTO shop.orders (amount, note) SELECT g * 1.5, 'n' || g FROM generate_series(1, 500) g")
    finally:
        await conn.close()
    yield dsn


@pytest.fixture
async def my_source() -> AsyncIterator[str]:
    name = f"maestro_i_{uuid.uuid4().hex[:12]}"
    await mysql_execute(None, f"CREATE DATABASE `{name}`")
    try:
        await mysql_execute(
            name,
            "CREATE TABLE orders (id bigint unsigned AUTO_INCREMENT PRIMARY KEY, amount decimal(10,2), "
            "note varchar(50), at datetime(6) DEFAULT CURRENT_TIMESTAMP(6))",
            "INSERT INTO orders (amount, note) SELECT seq * 1.5, concat('n', seq) FROM seq_1_to_300",
        )
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        await mysql_execute(None, f"DROP DATABASE IF EXISTS `{name}`")


async def register(client: Any, name: str, driver: str, dsn: str) -> None:
    if driver == "postgres":
        dsn, _, password = _split_password(dsn)
    else:
        password = ""
    body = {"name": name, "driver": driver, "dsn": dsn, "landing_dataset": "landing"}
    if password:
        body["password"] = password
    resp = await client.post("/api/v1/databases", json=body)
    assert resp.status == 201, await resp.text()


def _split_password(dsn: str) -> tuple[str, str, str]:
    """The tests' DSNs carry an empty password ("user:@"): a database entry takes none in its DSN."""
    from urllib.parse import urlsplit

    password = urlsplit(dsn).password or ""
    return dsn.replace(f":{password}@", "@", 1), "", password


async def import_table(client: Any, dataset: str, name: str, settings: dict, **extra: Any) -> str:
    resp = await client.post("/api/v1/tables", json={
        "dataset": dataset, "name": name, "kind": "import", "import": settings, **extra})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def run_table(client: Any, table_id: str, *, descendants: bool = False) -> dict:
    resp = await client.post(f"/api/v1/tables/{table_id}/run", json={"descendants": descendants})
    assert resp.status in (201, 202), await resp.text()
    return await _finished(client, (await resp.json())["id"], timeout=120)


def query(services: Any, sql: str) -> list[dict]:
    return [dict(r) for r in services.bigquery.client.query(sql, job_retry=None).result()]


def _states(run: dict) -> dict:
    return {t["name"]: (t["state"], t["error"]) for t in run["tables"]}


async def _jobs(runtime: Any, table_id: str) -> list[Any]:
    return await runtime.pool.fetch(
        "SELECT job_id, kind, state, config, statistics, progress FROM jobs WHERE table_id = $1 ORDER BY planned_at",
        table_id)


async def test_a_postgres_import_runs_full_then_incremental_and_its_child_waits(client, services, runtime, pg_source) -> None:
    await register(client, "shop", "postgres", pg_source)
    imp = await import_table(client, "imp_pg", "orders", {
        "source_database": "shop", "query": "SELECT id, amount, note FROM shop.orders WHERE amount > 3",
        "id_column": "id"})
    (await (await client.post("/api/v1/tables", json={
        "dataset": "imp_pg", "name": "total", "query": "SELECT COUNT(*) AS n, SUM(amount) AS s FROM imp_pg.orders"})).json())["id"]
    run = await run_table(client, imp, descendants=True)
    assert run["status"] == "succeeded", _states(run)
    assert _rows(services, "imp_pg.orders") == 498  # amount > 3: ids 3..500
    assert query(services, "SELECT n FROM `maestro-local.imp_pg.total`")[0]["n"] == 498
    jobs = await _jobs(runtime, imp)
    kinds = [(j["kind"], j["state"]) for j in jobs]
    assert kinds == [("import", "succeeded"), ("load", "succeeded")], kinds
    import orjson

    load_config = orjson.loads(jobs[1]["config"])
    assert load_config["write_disposition"] == "WRITE_TRUNCATE" and load_config["watermark"]["value"] == "500"
    assert orjson.loads(jobs[1]["statistics"])["output_rows"] == 498
    assert orjson.loads(jobs[0]["progress"])["phase"] == "cleaned"
    # The uploaded file is gone once loaded.
    blobs = list(services.storage.list_blobs(services.runner.config.bucket, prefix="imports/imp_pg/orders/"))
    assert blobs == []
    # The watermark is recorded in the load's JobSucceeded, and only there.
    events = await runtime.store.read(f"job-{jobs[1]['job_id']}")
    assert [e.type for e in events] == ["JobPlanned", "JobSubmitted", "JobSucceeded", "LoadSourceDeleted"]
    assert events[2].event.watermark.value == "500"

    conn = await asyncpg.connect(pg_source)
    try:
        await conn.execute("INSERT INTO shop.orders (amount, note) SELECT g, 'm' || g FROM generate_series(10, 19) g")
    finally:
        await conn.close()
    run = await run_table(client, imp)
    assert run["status"] == "succeeded", _states(run)
    assert _rows(services, "imp_pg.orders") == 508
    assert query(services, "SELECT COUNT(DISTINCT id) AS n FROM `maestro-local.imp_pg.orders`")[0]["n"] == 508
    load = [j for j in await _jobs(runtime, imp) if j["kind"] == "load"][-1]
    assert orjson.loads(load["config"])["write_disposition"] == "WRITE_APPEND"

    # Nothing new: an empty append, the watermark stays.
    run = await run_table(client, imp)
    assert run["status"] == "succeeded" and _rows(services, "imp_pg.orders") == 508


async def test_a_mysql_import_full_and_incremental(client, services, runtime, my_source) -> None:
    await register(client, "crm", "mysql", my_source)
    full = await import_table(client, "imp_my", "all_orders", {"source_database": "crm", "source_table": "orders"})
    inc = await import_table(client, "imp_my", "orders", {
        "source_database": "crm", "source_table": "orders", "id_column": "id", "settle_seconds": 2.5})
    for table in (full, inc):
        run = await run_table(client, table)
        assert run["status"] == "succeeded", _states(run)
    assert _rows(services, "imp_my.all_orders") == 300 and _rows(services, "imp_my.orders") == 300
    name = my_source.rsplit("/", 1)[1]
    await mysql_execute(name, "INSERT INTO orders (amount, note) VALUES (1, 'a'), (2, 'b')")
    for table in (full, inc):
        run = await run_table(client, table)
        assert run["status"] == "succeeded", _states(run)
    assert _rows(services, "imp_my.all_orders") == 302
    assert _rows(services, "imp_my.orders") == 302
    assert query(services, "SELECT COUNT(DISTINCT id) AS n FROM `maestro-local.imp_my.orders`")[0]["n"] == 302


async def test_an_import_that_fails_isolates_its_descendants_and_moves_no_watermark(client, services, runtime, pg_source) -> None:
    await register(client, "shop", "postgres", pg_source)
    imp = await import_table(client, "imp_bad", "orders", {
        "source_database": "shop", "query": "SELECT id, amount FROM shop.orders", "id_column": "id"})
    await client.post("/api/v1/tables", json={"dataset": "imp_bad", "name": "child", "query": "SELECT * FROM imp_bad.orders"})
    conn = await asyncpg.connect(pg_source)
    try:
        await conn.execute("ALTER TABLE shop.orders RENAME COLUMN amount TO total")
    finally:
        await conn.close()
    run = await run_table(client, imp, descendants=True)
    assert run["status"] == "failed"
    states = _states(run)
    assert states["imp_bad.orders"][0] == "failed" and "amount" in states["imp_bad.orders"][1]
    assert states["imp_bad.child"][0] == "skipped" and "upstream_failed" in states["imp_bad.child"][1]
    assert not [j for j in await _jobs(runtime, imp) if j["kind"] == "load"]


async def test_an_unknown_source_fails_the_import_clearly(client, services, runtime) -> None:
    resp = await client.post("/api/v1/databases", json={
        "name": "gone", "driver": "postgres", "dsn": "postgres://nobody@127.0.0.1:1/none", "landing_dataset": "x"})
    assert resp.status == 201
    imp = await import_table(client, "imp_gone", "t", {"source_database": "gone", "source_table": "t"})
    run = await run_table(client, imp)
    state, error = _states(run)["imp_gone.t"]
    assert state == "failed" and "cannot connect" in error
    await asyncio.sleep(0)


# -- concurrent writers: no loss, no duplicate ------------------------------------------------------

WRITERS = 6
WRITE_SECONDS = 12.0


async def _pg_writer(dsn: str, seed: int, stop: asyncio.Event, committed: list[int]) -> None:
    import random

    rnd = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            tx = conn.transaction()
            await tx.start()
            ids = []
            for _ in range(rnd.randint(1, 3)):
                if rnd.random() < 0.4:
                    # In a savepoint: the row carries the subtransaction's id, which no snapshot
                    # lists as in flight; some savepoints roll back.
                    savepoint = conn.transaction()
                    await savepoint.start()
                    row = await conn.fetchval("INSERT INTO shop.w (writer) VALUES ($1) RETURNING id", seed)
                    if rnd.random() < 0.25:
                        await savepoint.rollback()
                    else:
                        await savepoint.commit()
                        ids.append(row)
                else:
                    ids.append(await conn.fetchval("INSERT INTO shop.w (writer) VALUES ($1) RETURNING id", seed))
            # Some hold their ids for a while: later ids commit first (out of id order).
            await asyncio.sleep(rnd.choice([0, 0, 0.05, 0.2, 1.5]))
            if rnd.random() < 0.2:
                await tx.rollback()
            else:
                await tx.commit()
                committed.extend(ids)
    finally:
        await conn.close()


async def _my_writer(database: str, seed: int, stop: asyncio.Event, committed: list[int]) -> None:
    import random

    rnd = random.Random(seed)
    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db=database)
    try:
        async with conn.cursor() as cur:
            while not stop.is_set():
                await conn.begin()
                ids = []
                for _ in range(rnd.randint(1, 3)):
                    await cur.execute("INSERT INTO w (writer) VALUES (%s)", (seed,))
                    ids.append(cur.lastrowid)
                await asyncio.sleep(rnd.choice([0, 0, 0.05, 0.2, 1.5]))
                if rnd.random() < 0.2:
                    await conn.rollback()
                else:
                    await conn.commit()
                    committed.extend(ids)
    finally:
        conn.close()


async def _import_while_writing(client, services, table_id: str, writers: list) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w(stop)) for w in writers]
    loop = asyncio.get_running_loop()
    end = loop.time() + WRITE_SECONDS
    imports = 0
    try:
        while loop.time() < end:
            run = await run_table(client, table_id)
            assert run["status"] == "succeeded", _states(run)
            imports += 1
            await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert imports >= 3
    # Writers are done and every transaction has ended: the next import catches up on all of it.
    run = await run_table(client, table_id)
    assert run["status"] == "succeeded", _states(run)


async def test_concurrent_writers_postgres_no_loss_no_duplicate(client, services, runtime, pg_source) -> None:
    conn = await asyncpg.connect(pg_source)
    await conn.execute("CREATE TABLE shop.w (id bigserial PRIMARY KEY, writer int, at timestamptz DEFAULT clock_timestamp())")
    await conn.close()
    await register(client, "shop", "postgres", pg_source)
    table = await import_table(client, "imp_cw_pg", "w", {
        "source_database": "shop", "source_table": "shop.w", "id_column": "id"})
    committed: list[int] = []
    await _import_while_writing(client, services, table, [
        (lambda stop, i=i: _pg_writer(pg_source, i, stop, committed)) for i in range(WRITERS)])
    loaded = [r["id"] for r in query(services, "SELECT id FROM `maestro-local.imp_cw_pg.w`")]
    assert len(loaded) == len(set(loaded)), "a row was loaded twice"
    assert sorted(loaded) == sorted(committed), (len(loaded), len(committed))
    assert len(committed) > 50


async def test_rows_of_a_savepoint_in_a_transaction_in_flight_are_not_skipped(client, services, runtime, pg_source) -> None:
    """A savepoint's rows carry the subtransaction's id, and a snapshot lists only top-level
    transactions as in flight: judged by the snapshot alone, ``b`` and ``d`` would look committed
    to the import that ran while their transaction was open, and be skipped once it commits."""
    await _pg(pg_source, "CREATE TABLE shop.sp (id bigserial PRIMARY KEY, what text)")
    await register(client, "shop", "postgres", pg_source)
    table = await import_table(client, "imp_sp", "sp", {
        "source_database": "shop", "source_table": "shop.sp", "id_column": "id"})
    assert (await run_table(client, table))["status"] == "succeeded"  # the first import: empty
    writer = await asyncpg.connect(pg_source)
    try:
        tx = writer.transaction()
        await tx.start()
        await writer.execute("INSERT INTO shop.sp (what) VALUES ('a')")
        for what in ("b", "x"):
            savepoint = writer.transaction()
            await savepoint.start()
            await writer.execute("INSERT INTO shop.sp (what) VALUES ($1)", what)
            await (savepoint.commit() if what == "b" else savepoint.rollback())
        await _pg(pg_source, "INSERT INTO shop.sp (what) VALUES ('c')")  # a later id commits first
        assert (await run_table(client, table))["status"] == "succeeded"
        savepoint = writer.transaction()
        await savepoint.start()
        await writer.execute("INSERT INTO shop.sp (what) VALUES ('d')")
        await savepoint.commit()
        await tx.commit()
    finally:
        await writer.close()
    assert (await run_table(client, table))["status"] == "succeeded"
    loaded = sorted(r["what"] for r in query(services, "SELECT what FROM `maestro-local.imp_sp.sp`"))
    assert loaded == ["a", "b", "c", "d"]


async def test_rows_beyond_the_span_wait_while_a_transaction_stays_open(client, services, runtime, pg_source, monkeypatch) -> None:
    """The list of loaded transactions is bounded: with a span of 3 transaction ids and a limit
    of 2, rows of later transactions wait (are not loaded, not lost) until the transaction that
    holds the snapshot's xmin back ends; then every row is loaded once."""
    from maestro.handlers.runs import import_window

    monkeypatch.setattr(import_window, "XID_SPAN", 3)
    monkeypatch.setattr(import_window, "SEEN_LIMIT", 2)
    await _pg(pg_source, "CREATE TABLE shop.span (id bigserial PRIMARY KEY, n int)")
    await register(client, "shop", "postgres", pg_source)
    table = await import_table(client, "imp_span", "span", {
        "source_database": "shop", "source_table": "shop.span", "id_column": "id"})
    holder = await asyncpg.connect(pg_source)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("INSERT INTO shop.span (n) VALUES (0)")  # holds the xmin
        counts = []
        for round_ in range(3):
            for i in range(4):  # four transactions, one id each
                await _pg(pg_source, f"INSERT INTO shop.span (n) VALUES ({round_ * 10 + i + 1})")
            assert (await run_table(client, table))["status"] == "succeeded"
            counts.append(len(query(services, "SELECT n FROM `maestro-local.imp_span.span`")))
        assert counts[-1] < 12, counts  # the rows beyond the span wait for the holder
        await tx.commit()
    finally:
        await holder.close()
    assert (await run_table(client, table))["status"] == "succeeded"
    loaded = sorted(r["n"] for r in query(services, "SELECT n FROM `maestro-local.imp_span.span`"))
    assert loaded == sorted([0] + [r * 10 + i + 1 for r in range(3) for i in range(4)])


async def test_concurrent_writers_mysql_no_loss_no_duplicate(client, services, runtime, my_source) -> None:
    name = my_source.rsplit("/", 1)[1]
    await mysql_execute(name, "CREATE TABLE w (id bigint AUTO_INCREMENT PRIMARY KEY, writer int)")
    await register(client, "crm", "mysql", my_source)
    # Transactions here hold their ids at most 1.5 s: a settle window of 2.5 s covers them.
    table = await import_table(client, "imp_cw_my", "w", {
        "source_database": "crm", "source_table": "w", "id_column": "id", "settle_seconds": 2.5})
    committed: list[int] = []
    await _import_while_writing(client, services, table, [
        (lambda stop, i=i: _my_writer(name, i, stop, committed)) for i in range(WRITERS)])
    loaded = [r["id"] for r in query(services, "SELECT id FROM `maestro-local.imp_cw_my.w`")]
    assert len(loaded) == len(set(loaded)), "a row was loaded twice"
    assert sorted(loaded) == sorted(committed), (len(loaded), len(committed))
    assert len(committed) > 50


# -- re-imports and schema changes ------------------------------------------------------------------

async def _pg(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _last_started(runtime: Any, table_id: str) -> Any:
    row = await runtime.pool.fetchrow(
        "SELECT e.data FROM events e JOIN jobs j ON e.stream_id = 'job-' || j.job_id "
        "WHERE j.table_id = $1 AND e.type = 'ImportStarted' ORDER BY e.position DESC LIMIT 1", table_id)
    import orjson

    return orjson.loads(row["data"])


async def test_reimports_requested_by_route_and_by_condition_replace_the_table(client, services, runtime, pg_source) -> None:
    await register(client, "shop", "postgres", pg_source)
    imp = await import_table(client, "imp_re", "orders", {
        "source_database": "shop", "source_table": "shop.orders", "id_column": "id"})
    assert (await run_table(client, imp))["status"] == "succeeded"
    # Rows changed in place are not seen by an append; a full re-import replaces the table.
    await _pg(pg_source, "DELETE FROM shop.orders WHERE id > 100")
    resp = await client.post(f"/api/v1/tables/{imp}/reimport", json={"reason": "source cleaned up"})
    assert resp.status == 202, await resp.text()
    assert (await run_table(client, imp))["status"] == "succeeded"
    assert _rows(services, "imp_re.orders") == 100
    started = await _last_started(runtime, imp)
    assert started["full"] and "source cleaned up" in started["reason"]
    # The request is spent: the next import appends again.
    await _pg(pg_source, "INSERT INTO shop.orders (amount, note) VALUES (1, 'x')")
    assert (await run_table(client, imp))["status"] == "succeeded"
    assert _rows(services, "imp_re.orders") == 101 and not (await _last_started(runtime, imp))["full"]

    # A reimport condition that holds at the run's slot (any hour) makes a scheduled run's import full.
    resp = await client.patch(f"/api/v1/tables/{imp}", json={"import": {
        "source_database": "shop", "source_table": "shop.orders", "id_column": "id",
        "reimport_conditions": [{"hours": list(range(24))}]}})
    assert resp.status == 200, await resp.text()
    await _pg(pg_source, "DELETE FROM shop.orders WHERE id <= 50")
    assert (await run_table(client, imp))["status"] == "succeeded"
    assert _rows(services, "imp_re.orders") == 51
    assert "reimport condition" in (await _last_started(runtime, imp))["reason"]


async def test_schema_changes_follow_the_tables_policy(client, services, runtime, pg_source) -> None:
    await register(client, "shop", "postgres", pg_source)
    add = await import_table(client, "imp_sc", "add", {
        "source_database": "shop", "source_table": "shop.orders", "id_column": "id"})
    re = await import_table(client, "imp_sc", "re", {
        "source_database": "shop", "source_table": "shop.orders", "id_column": "id", "on_schema_change": "reimport"})
    fail = await import_table(client, "imp_sc", "fail", {
        "source_database": "shop", "source_table": "shop.orders", "id_column": "id", "on_schema_change": "fail"})
    for t in (add, re, fail):
        assert (await run_table(client, t))["status"] == "succeeded"
    await _pg(pg_source, "ALTER TABLE shop.orders ADD COLUMN channel text DEFAULT 'web'",
              "INSERT INTO shop.orders (amount, note) VALUES (7, 'new')")
    run = await run_table(client, add)
    assert run["status"] == "succeeded", _states(run)
    got = query(services, "SELECT COUNT(*) AS n, COUNTIF(channel = 'web') AS web FROM `maestro-local.imp_sc.add`")[0]
    assert got == {"n": 501, "web": 1}  # appended with the new column; earlier rows have NULL there
    run = await run_table(client, re)
    assert run["status"] == "succeeded" and _rows(services, "imp_sc.re") == 501
    assert query(services, "SELECT COUNTIF(channel = 'web') AS web FROM `maestro-local.imp_sc.re`")[0]["web"] == 501
    run = await run_table(client, fail)
    state, error = _states(run)["imp_sc.fail"]
    assert state == "failed" and "added channel" in error and _rows(services, "imp_sc.fail") == 500
    changes = [r["action"] for r in await runtime.pool.fetch(
        "SELECT data->>'action' AS action FROM events WHERE type = 'ImportSchemaChanged' ORDER BY position")]
    assert changes == ["add_columns", "reimport", "fail"]
    # A retyped column cannot be appended: add_columns fails with the columns named.
    await _pg(pg_source, "ALTER TABLE shop.orders ALTER COLUMN note TYPE integer USING length(note)")
    state, error = _states(await run_table(client, add))["imp_sc.add"]
    assert state == "failed" and "note: STRING -> INT64" in error and "reimport" in error


async def test_mysql_timestamp_boundary_is_read_again_and_deduplicated(client, services, runtime, my_source) -> None:
    """Rows sharing the watermark's value arrive after it was loaded: ``>=`` reads them, the rows
    loaded before at that value are dropped by their fingerprints, the new ones are appended."""
    name = my_source.rsplit("/", 1)[1]
    await mysql_execute(name, "CREATE TABLE ev (id int AUTO_INCREMENT PRIMARY KEY, at datetime, what varchar(10))",
                        "INSERT INTO ev (at, what) VALUES ('2024-01-01 00:00:00', 'a'), ('2024-01-01 00:00:00', 'b'), "
                        "('2024-01-01 00:00:00', 'b')")
    await register(client, "crm", "mysql", my_source)
    table = await import_table(client, "imp_ts", "ev", {
        "source_database": "crm", "query": "SELECT at, what FROM ev", "id_column": "at", "settle_seconds": 0})
    assert (await run_table(client, table))["status"] == "succeeded"
    assert _rows(services, "imp_ts.ev") == 3
    # Two more at the same second (one identical to rows already loaded) and one later.
    await mysql_execute(name, "INSERT INTO ev (at, what) VALUES ('2024-01-01 00:00:00', 'b'), "
                        "('2024-01-01 00:00:00', 'c'), ('2024-01-01 00:00:05', 'd')")
    assert (await run_table(client, table))["status"] == "succeeded"
    got = sorted((r["what"], r["n"]) for r in query(
        services, "SELECT what, COUNT(*) AS n FROM `maestro-local.imp_ts.ev` GROUP BY what"))
    assert got == [("a", 1), ("b", 3), ("c", 1), ("d", 1)]
    # Nothing new: the boundary (now 00:00:05, one row) is read again and dropped.
    assert (await run_table(client, table))["status"] == "succeeded"
    assert _rows(services, "imp_ts.ev") == 6


async def test_mysql_edges_null_ids_a_deleted_boundary_and_typed_bounds(client, services, runtime, my_source) -> None:
    name = my_source.rsplit("/", 1)[1]
    big = 2**62 + 1  # beyond a double's exact integers: bound as a number, not a string
    await mysql_execute(name, "CREATE TABLE e (k bigint NULL, what varchar(10))",
                        f"INSERT INTO e VALUES ({big}, 'a'), ({big + 1}, 'b'), (NULL, 'null')")
    await register(client, "crm", "mysql", my_source)
    table = await import_table(client, "imp_edge", "e", {
        "source_database": "crm", "source_table": "e", "id_column": "k", "settle_seconds": 0})
    assert (await run_table(client, table))["status"] == "succeeded"
    # The full (first) import reads the rows whose column is NULL too.
    assert sorted(r["what"] for r in query(services, "SELECT what FROM `maestro-local.imp_edge.e`")) == ["a", "b", "null"]
    # The row at the watermark goes away: the watermark stays, nothing is read twice.
    await mysql_execute(name, f"DELETE FROM e WHERE k = {big + 1}")
    assert (await run_table(client, table))["status"] == "succeeded"
    await mysql_execute(name, f"INSERT INTO e VALUES ({big + 2}, 'c')")
    assert (await run_table(client, table))["status"] == "succeeded"
    got = sorted(r["what"] for r in query(services, "SELECT what FROM `maestro-local.imp_edge.e`"))
    assert got == ["a", "b", "c", "null"]


async def test_an_incremental_import_from_a_postgres_view_fails_clearly(client, services, runtime, pg_source) -> None:
    await _pg(pg_source, "CREATE VIEW shop.big_orders AS SELECT * FROM shop.orders WHERE amount > 100")
    await register(client, "shop", "postgres", pg_source)
    table = await import_table(client, "imp_view", "big", {
        "source_database": "shop", "source_table": "shop.big_orders", "id_column": "id"})
    state, error = _states(await run_table(client, table))["imp_view.big"]
    assert state == "failed" and "is a view" in error
    full = await import_table(client, "imp_view", "all_big", {"source_database": "shop", "source_table": "shop.big_orders"})
    assert (await run_table(client, full))["status"] == "succeeded" and _rows(services, "imp_view.all_big") == 434


class _Unreachable:
    """BigQuery as seen through a network that loses every answer about load jobs after their
    insert went out (jobs.get / the insert's own answer fail), until ``reachable`` is set: the
    executor gives the load up at its deadline, while the local BigQuery has run it."""

    def __init__(self, jobs: Any) -> None:
        self.jobs, self.reachable = jobs, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.jobs, name)

    async def submit_state(self, job_id: str, config: Any) -> Any:
        adopted, _ = await self.jobs.submit_state(job_id, config)
        return adopted, None

    async def get(self, job_id: str, *, project: str | None = None) -> Any:
        if "_load" in job_id and not self.reachable:
            raise OSError("network unreachable")
        return await self.jobs.get(job_id, project=project)

    async def wait(self, *args: Any, **kwargs: Any) -> Any:
        return None


async def test_a_load_given_up_on_that_committed_is_recorded_as_succeeded(client, services, runtime, pg_source) -> None:
    """Recorded as failed, a load that committed anyway would make the next import append the
    same rows again: the importer asks BigQuery how it ended before recording it."""
    import dataclasses

    await register(client, "shop", "postgres", pg_source)
    imp = await import_table(client, "imp_late", "orders", {
        "source_database": "shop", "source_table": "shop.orders", "id_column": "id"})
    assert (await run_table(client, imp))["status"] == "succeeded"
    await _pg(pg_source, "INSERT INTO shop.orders (amount, note) SELECT g, 'late' FROM generate_series(1, 7) g")
    runner = services.runner
    before_jobs, before = runner.jobs, runner.config
    flaky = _Unreachable(before_jobs)
    runner.jobs = flaky
    runner.config = dataclasses.replace(before, job_timeout=2.0)
    loop = asyncio.get_running_loop()
    loop.call_later(4.0, lambda: setattr(flaky, "reachable", True))  # back after the deadline
    try:
        run = await run_table(client, imp)
    finally:
        runner.jobs, runner.config = before_jobs, before
    assert run["status"] == "succeeded", _states(run)
    load = [j for j in await _jobs(runtime, imp) if j["kind"] == "load"][-1]
    assert load["state"] == "succeeded"
    assert (await run_table(client, imp))["status"] == "succeeded"
    assert query(services, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d FROM `maestro-local.imp_late.orders`")[0] == {"n": 507, "d": 507}


async def test_cancelling_a_run_stops_an_import_stuck_in_a_source_statement(client, services, runtime, pg_source) -> None:
    await register(client, "shop", "postgres", pg_source)
    imp = await import_table(client, "imp_stuck", "orders", {"source_database": "shop", "source_table": "shop.orders"})
    blocker = await asyncpg.connect(pg_source)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE shop.orders IN ACCESS EXCLUSIVE MODE")  # the import's read waits
    try:
        resp = await client.post(f"/api/v1/tables/{imp}/run", json={})
        run_id = (await resp.json())["id"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await runtime.pool.fetchval(
                "SELECT count(*) FROM events e JOIN jobs j ON e.stream_id = 'job-' || j.job_id "
                "WHERE j.run_id = $1 AND e.type = 'ImportStarted'", run_id):
            assert loop.time() < deadline
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        cancelled_at = loop.time()
        assert (await client.post(f"/api/v1/runs/{run_id}/cancel", json={})).status == 202
        run = await _finished(client, run_id, timeout=20)
        assert run["status"] == "cancelled", _states(run)
        assert loop.time() - cancelled_at < 5  # not when the statement would have ended
        assert _states(run)["imp_stuck.orders"][0] == "cancelled"
    finally:
        await tx.rollback()
        await blocker.close()

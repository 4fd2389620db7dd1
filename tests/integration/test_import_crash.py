"""The crash test, with imports (issue 9, item 7): ``kill -9`` while imports from PostgreSQL and
MariaDB read, upload, load and clean up.

``maestro serve`` runs as a real process (tests/integration/test_crash.py's harness). The catalog:
an incremental import from a PostgreSQL source, one from MariaDB, a full import from each, and a
summary table reading all four. A run of them is killed again and again (3 to 8 SIGKILLs, each 0.1
to 2.5 s after the process answers /healthz, so kills land in the reads, the uploads, the loads and
the clean-ups); then rows are added to the sources and a second run is killed the same way.

After each run: the run succeeded; every import table in BigQuery equals its source row for row
(no row lost, none twice); on the emulator, each import table has exactly one successful load job
per run, every one of them planned in the log before it was sent; the watermark of each incremental
table is the one its last load recorded; no import file is left in the bucket.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from integration.test_crash import Serve, _emulator_jobs, _stop_local_stack
from sources import mysql_execute

pytestmark = pytest.mark.slow

ROWS = 400_000  # long enough for MIN_KILLS kills on a quiet machine (150 k finished after 2)
MIN_KILLS, MAX_KILLS = 3, 8


def _bigquery(data_dir: Path, sql: str) -> list[dict]:
    from maestro.adapters.localstack import _recorded_stack, bigquery_client

    stack = _recorded_stack(data_dir / "localstack", "maestro-local")
    client = bigquery_client(stack)
    try:
        return [dict(r) for r in client.query(sql, job_retry=None).result()]
    finally:
        client.close()


def _leftovers(data_dir: Path) -> list[str]:
    from maestro.adapters.localstack import _recorded_stack, storage_client

    stack = _recorded_stack(data_dir / "localstack", "maestro-local")
    client = storage_client(stack)
    return [b.name for b in client.list_blobs("maestro-local", prefix="imports/")]


async def _mysql_value(database: str, sql: str):
    import aiomysql

    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db=database)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return (await cur.fetchone())[0]
    finally:
        conn.close()


async def _run_with_kills(serve: Serve, conn: asyncpg.Connection, rng: random.Random, freq: str) -> tuple[str, int]:
    run_id = serve.call("POST", "/api/v1/runs", {"frequency_id": freq})["id"]
    kills = 0
    deadline = time.monotonic() + 300
    await asyncio.sleep(rng.uniform(0.1, 1.0))
    while True:
        status = await conn.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
        if status != "running":
            if kills < MIN_KILLS:
                pytest.fail(f"the run finished after only {kills} kills; make it longer")
            return run_id, kills
        assert time.monotonic() < deadline, serve.tail()
        if kills >= MAX_KILLS:
            await asyncio.sleep(0.2)
            continue
        serve.kill()
        serve.start()
        await asyncio.to_thread(serve.wait_healthy)
        kills += 1
        await asyncio.sleep(rng.uniform(0.1, 2.5))


async def test_kill_9_during_imports_loads_every_row_exactly_once(dsn: str, fresh_database, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"\nimport crash test seed {seed}")
    pg_dsn, _ = fresh_database
    my_db = f"maestro_c_{uuid.uuid4().hex[:12]}"
    src = await asyncpg.connect(pg_dsn)
    await src.execute(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, amount numeric(12,2), note text, at timestamptz, "
        "tags text[], doc jsonb)")
    await src.execute(
        f"INSERT INTO orders (amount, note, at, tags, doc) SELECT g * 0.01, repeat('x', g % 50), "
        f"'2024-01-01'::timestamptz + g * interval '1 second', ARRAY['a', g::text], "
        f"jsonb_build_object('g', g) FROM generate_series(1, {ROWS}) g")
    await mysql_execute(None, f"CREATE DATABASE `{my_db}`")
    await mysql_execute(
        my_db,
        "CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, amount decimal(12,2), note varchar(64), "
        "at datetime(6))",
        f"INSERT INTO orders (amount, note, at) SELECT seq * 0.01, repeat('y', seq % 50), "
        f"'2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_{ROWS}",
    )
    data_dir = tmp_path / "data"
    serve = Serve(data_dir, dsn, tmp_path / "serve.log")
    conn = await asyncpg.connect(dsn)
    try:
        serve.start()
        await asyncio.to_thread(serve.wait_healthy)
        password = pg_dsn.split("//", 1)[1].split("@", 1)[0].partition(":")[2]
        serve.call("POST", "/api/v1/databases", {
            "name": "pgsrc", "driver": "postgres", "dsn": pg_dsn.replace(f":{password}@", "@", 1),
            "landing_dataset": "landing", **({"password": password} if password else {})})
        serve.call("POST", "/api/v1/databases", {
            "name": "mysrc", "driver": "mysql", "dsn": f"mysql://root@127.0.0.1:3306/{my_db}",
            "landing_dataset": "landing"})
        freq = serve.call("POST", "/api/v1/frequencies", {"name": "imports", "period": 86400, "offset": 0})["id"]
        tables = {
            "pg_inc": {"source_database": "pgsrc", "source_table": "orders", "id_column": "id"},
            "pg_full": {"source_database": "pgsrc", "query": "SELECT id, amount, tags, doc FROM orders"},
            "my_inc": {"source_database": "mysrc", "source_table": "orders", "id_column": "id", "settle_seconds": 0.5},
            "my_full": {"source_database": "mysrc", "source_table": "orders"},
        }
        ids = {}
        for name, settings in tables.items():
            ids[name] = serve.call("POST", "/api/v1/tables", {
                "dataset": "crashimp", "name": name, "kind": "import", "import": settings, "frequency_id": freq})["id"]
        serve.call("POST", "/api/v1/tables", {
            "dataset": "crashimp", "name": "summary", "frequency_id": freq,
            "query": " UNION ALL ".join(f"SELECT '{n}' AS t, COUNT(*) AS n FROM crashimp.{n}" for n in tables)})

        expected = ROWS
        all_kills = 0
        for round_ in (1, 2):
            run_id, kills = await _run_with_kills(serve, conn, rng, freq)
            all_kills += kills
            run = serve.call("GET", f"/api/v1/runs/{run_id}")
            assert run["status"] == "succeeded", [(t["name"], t["state"], t["error"]) for t in run["tables"]]
            # (MariaDB's auto-increment leaves gaps after a bulk insert: ids are compared, not counted)
            source_max = {"pg": await src.fetchval("SELECT max(id) FROM orders"),
                          "my": int(await _mysql_value(my_db, "SELECT max(id) FROM orders"))}
            for name in tables:
                got = _bigquery(data_dir, f"SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d, MAX(id) AS m "
                                          f"FROM `maestro-local.crashimp.{name}`")[0]
                assert got == {"n": expected, "d": expected, "m": source_max[name[:2]]}, (round_, name, got)
            summary = {r["t"]: r["n"] for r in _bigquery(data_dir, "SELECT t, n FROM `maestro-local.crashimp.summary`")}
            assert summary == {n: expected for n in tables}
            # Exactly one successful load per import table in this run, each planned before it was sent.
            planned = {r["job_id"] for r in await conn.fetch(
                "SELECT data->>'job_id' AS job_id FROM events WHERE type = 'JobPlanned' "
                "AND data->>'run_id' = $1 AND data->'config'->>'kind' = 'load'", run_id)}
            jobs = [j for j in await asyncio.to_thread(_emulator_jobs, data_dir) if j.job_id in planned]
            ok = Counter(j.labels["maestro_table"] for j in jobs if j.state == "DONE" and j.error_result is None)
            assert sorted(ok.values()) == [1, 1, 1, 1] and len(ok) == 4, ok
            assert {j.job_id for j in jobs} == planned
            succeeded = await conn.fetch(
                "SELECT data FROM events WHERE type = 'JobSucceeded' AND data->>'run_id' = $1", run_id)
            per_job = Counter(json.loads(r["data"])["job_id"] for r in succeeded)
            assert set(per_job.values()) == {1}, "every job has one JobSucceeded"
            marks = {json.loads(r["data"])["table_id"]: json.loads(r["data"]).get("watermark")
                     for r in succeeded if json.loads(r["data"]).get("watermark")}
            assert marks[ids["pg_inc"]]["value"] == str(source_max["pg"])
            assert marks[ids["my_inc"]]["value"] == str(source_max["my"])
            assert await asyncio.to_thread(_leftovers, data_dir) == []
            restarted = await conn.fetchval(
                "SELECT count(*) FROM events WHERE type = 'ImportStarted' AND data->>'run_id' = $1 "
                "AND (data->>'read')::int > 1", run_id)
            adopted = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE run_id = $1 AND kind = 'load' AND adopted", run_id)
            print(f"import crash test round {round_}: {kills} kills, run {run['status']}; "
                  f"reads restarted: {restarted}, loads adopted on 409: {adopted}")
            # More rows for the next round (incremental imports append only these).
            await src.execute(
                "INSERT INTO orders (amount, note, at, tags, doc) SELECT g, 'z', now(), ARRAY['b'], '{}'::jsonb "
                "FROM generate_series(1, 20000) g")
            await mysql_execute(my_db, "INSERT INTO orders (amount, note, at) SELECT seq, 'z', now() FROM seq_1_to_20000")
            expected += 20000
        assert all_kills >= 2 * MIN_KILLS
    finally:
        await conn.close()
        await src.close()
        try:
            serve.stop()
        finally:
            _stop_local_stack(data_dir)
            await mysql_execute(None, f"DROP DATABASE IF EXISTS `{my_db}`")

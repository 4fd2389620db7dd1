"""``kill -9`` of ``maestro serve`` during an external table's wait and during a load.

The process runs with ``MAESTRO_EXTERNAL_WAIT_OVERRIDE`` (every wait: a few seconds). Killed while
its run waits for an upload, then started again, the wait is resumed by recovery and still fails
at its plan's time + the timeout (not counted anew from the restart), once, and the table that
reads it is ``upstream_failed``. Killed right after a load was requested, the load runs exactly
once after the restart and its object is deleted once.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from test_crash import Serve, _stop_local_stack

pytestmark = pytest.mark.slow
WAIT = 10.0  # longer than a restart takes, so a deadline counted anew would show


def _put(url: str, data: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": content_type})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return response.status


async def _until(conn: asyncpg.Connection, sql: str, *args, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = await conn.fetchval(sql, *args)
        if value:
            return value
        assert time.monotonic() < deadline, sql
        await asyncio.sleep(0.05)


async def test_kill_9_during_a_wait_and_a_load(dsn: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve = Serve(data_dir, dsn, tmp_path / "serve.log")
    serve.env["MAESTRO_EXTERNAL_WAIT_OVERRIDE"] = str(WAIT)
    conn = await asyncpg.connect(dsn)
    try:
        serve.start()
        await asyncio.to_thread(serve.wait_healthy)
        external = serve.call("POST", "/api/v1/tables", {
            "dataset": "crashwait", "name": "feed", "kind": "external", "external": {"format": "csv"}})["id"]
        child = serve.call("POST", "/api/v1/tables", {
            "dataset": "crashwait", "name": "feed_count", "query": "SELECT COUNT(*) AS n FROM crashwait.feed"})["id"]

        # ---- killed while waiting
        run_id = serve.call("POST", f"/api/v1/tables/{external}/run", {"descendants": True})["id"]
        wait_job = await _until(conn, "SELECT job_id FROM run_tables WHERE run_id = $1 AND table_id = $2 "
                                      "AND state = 'running'", run_id, external)
        await asyncio.sleep(1.5)
        serve.kill()
        serve.start()
        await asyncio.to_thread(serve.wait_healthy)
        resumed = time.time()
        status = await _until(conn, "SELECT status FROM runs WHERE run_id = $1 AND status <> 'running'",
                              run_id, timeout=WAIT + 60)
        assert status == "failed", serve.tail()
        rows = await conn.fetch("SELECT type, occurred_at, data->>'reason' AS reason FROM events "
                                "WHERE stream_id = $1 ORDER BY version", f"job-{wait_job}")
        assert [r["type"] for r in rows] == ["JobPlanned", "JobFailed"] and rows[1]["reason"] == "timeout"
        planned, failed = (r["occurred_at"].timestamp() for r in rows)
        # The deadline from the plan, kept across the kill (counted anew it would be resumed + WAIT).
        assert planned + WAIT <= failed < max(planned + WAIT, resumed) + 2.0, (failed - planned, resumed - planned)
        assert await conn.fetchval("SELECT state FROM run_tables WHERE run_id = $1 AND table_id = $2",
                                   run_id, child) == "skipped"

        # ---- killed right after a load was requested
        upload = serve.call("GET", f"/api/v1/tables/{external}")["upload"]
        assert await asyncio.to_thread(_put, upload["url"], b"id\n1\n2\n", upload["content_type"]) == 200
        load_id = serve.call("POST", f"/api/v1/tables/{external}/load", {"object": upload["object"]})["job_id"]
        serve.kill()
        serve.start()
        await asyncio.to_thread(serve.wait_healthy)
        await _until(conn, "SELECT 1 FROM events WHERE stream_id = $1 AND type = 'LoadSourceDeleted'",
                     f"job-{load_id}", timeout=60)
        types = [r["type"] for r in await conn.fetch(
            "SELECT type FROM events WHERE stream_id = $1 ORDER BY version", f"job-{load_id}")]
        assert types.count("JobSucceeded") == 1 and types.count("LoadSourceDeleted") == 1, types
        assert types[0] == "JobPlanned" and "JobFailed" not in types, types
        job = serve.call("GET", f"/api/v1/jobs/{load_id}")
        assert job["statistics"]["output_rows"] == 2 and job["sources_deleted"]["missing"] == []
    finally:
        await conn.close()
        serve.stop()
        _stop_local_stack(data_dir)

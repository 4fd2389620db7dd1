"""Completion callbacks: how soon the POST leaves after the event that causes it.

The chain measured is the production one: ``JobSucceeded`` of an extract is appended → the
``callbacks`` reactor (following the log) plans the delivery → the ``deliveries`` dispatcher
(following the log) signs a v4 URL for the extract's file (local GCS), reads the table's schema
(local BigQuery), signs the body (Standard Webhooks) and POSTs it through the SSRF-checking client
→ a healthy aiohttp receiver in this process notes the arrival. The figure is *arrival − the
moment before the append* (so the append's own commit is inside it), p50/p99 over ``--n``
callbacks one after another, and again with ``--burst`` extracts succeeding at once.

Baselines in the same run: a bare signed POST to the same receiver (the transport's floor), and
an append followed by a subscriber's wake-up (the log's floor).

    .venv/bin/python -m bench.bench_callbacks [--n 200] [--burst 50]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import tempfile
import time
from pathlib import Path

from aiohttp import web

from bench.common import bench_database, percentile
from maestro.adapters import google
from maestro.adapters.bigquery_tables import table_schema
from maestro.adapters.localstack import bigquery_client, start_local_stack, storage_client
from maestro.adapters.webhooks import WebhookClient, parse_networks, signed_headers
from maestro.events import Metadata
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded, PlannedTable, RunPlanned
from maestro.events.store import ANY_VERSION, NO_STREAM
from maestro.handlers.notify.endpoints import new_secret
from maestro.handlers.notify.wiring import build_notify
from maestro.runtime import open_runtime
from maestro.settings import Settings

ME = Metadata(actor="user:bench")
PROJECT = "maestro-local"


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Event] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = body.get("run_id") or request.headers.get("x-bench", "")
        self.arrivals[key] = time.perf_counter()
        self.waiters.setdefault(key, asyncio.Event()).set()
        return web.json_response({"ok": True})

    async def wait(self, key: str, timeout: float = 30) -> float:
        await asyncio.wait_for(self.waiters.setdefault(key, asyncio.Event()).wait(), timeout)
        return self.arrivals[key]


async def _extract_succeeded(store, i: int, url: str, uri: str, table_id: str) -> None:
    """What the runner records for one table's run: the plan, the extract planned, then (timed) its end."""
    run_id, job_id = f"bench-{i}", f"extract-bench-{i}"
    config = JobConfig(kind="query", project=PROJECT, query="SELECT 1", destination=f"{PROJECT}.bench.t")
    await store.append(f"run-{run_id}", NO_STREAM, [RunPlanned(run_id=run_id, trigger="table", tables=[PlannedTable(
        table_id=table_id, name="bench.t", priority=0, parents=[], config=config,
        extract={"format": "csv", "compression": "none", "notify_url": url})])], ME)
    extract = JobConfig(kind="extract", project=PROJECT, source=f"{PROJECT}.bench.t", destination_uris=[uri])
    await store.append(f"job-{job_id}", NO_STREAM, [JobPlanned(job_id=job_id, run_id=run_id, table_id=table_id,
                                                               config=extract)], ME)


async def _finish(store, i: int, uri: str, table_id: str) -> float:
    run_id, job_id = f"bench-{i}", f"extract-bench-{i}"
    t0 = time.perf_counter()
    await store.append(f"job-{job_id}", 1, [JobSucceeded(job_id=job_id, run_id=run_id, table_id=table_id,
                                                        statistics=JobStatistics(), destination_uris=[uri])], ME)
    return t0


async def main(n: int, burst: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]

    with tempfile.TemporaryDirectory(prefix="maestro-bench-cb-") as tmp:
        stack = await start_local_stack(Path(tmp) / "localstack", project=PROJECT)
        bq, gcs = bigquery_client(stack), storage_client(stack)
        await asyncio.to_thread(google.ensure_bucket, gcs, "maestro-local")
        await asyncio.to_thread(lambda: gcs.bucket("maestro-local").blob("extracts/bench.csv").upload_from_string("x\n1\n"))
        await asyncio.to_thread(lambda: bq.create_dataset("bench", exists_ok=True))
        await asyncio.to_thread(lambda: bq.query(f"CREATE OR REPLACE TABLE `{PROJECT}.bench.t` AS SELECT 1 AS x").result())
        signer = google.local_signer(Path(tmp), PROJECT)
        uri = "gs://maestro-local/extracts/bench.csv"
        try:
            async with bench_database() as dsn:
                settings = Settings(database_url=dsn, data_dir=Path(tmp) / "data", poll_interval=1.0,
                                    callback_allowed_networks=["127.0.0.1"])
                runtime = await open_runtime(settings)
                notify = build_notify(runtime.store, runtime.health, runtime.config_service.box, settings,
                                      storage=lambda: (gcs, signer), schema=lambda t: table_schema(bq, t))
                try:
                    await _measure(runtime, notify, receiver, url, uri, n, burst)
                finally:
                    await notify.close()
                    await runtime.close()
        finally:
            bq.close()
            await stack.stop()
            await runner.cleanup()


async def _measure(runtime, notify, receiver: Receiver, url: str, uri: str, n: int, burst: int) -> None:
    store = runtime.store
    notify.start()
    await asyncio.sleep(0.5)  # the reactors have their checkpoints
    for i in range(n + burst + 5):
        await _extract_succeeded(store, i, url, uri, f"t{i}")
    for i in range(5):  # warm-up: connections, first signing, first schema read
        t0 = await _finish(store, i, uri, f"t{i}")
        await receiver.wait(f"bench-{i}")

    sequential = []
    for i in range(5, 5 + n):
        t0 = await _finish(store, i, uri, f"t{i}")
        sequential.append(await receiver.wait(f"bench-{i}") - t0)

    starts = await asyncio.gather(*(_finish(store, i, uri, f"t{i}") for i in range(5 + n, 5 + n + burst)))
    arrivals = await asyncio.gather(*(receiver.wait(f"bench-{i}") for i in range(5 + n, 5 + n + burst)))
    bursty = [a - s for a, s in zip(arrivals, starts, strict=True)]

    # Baselines: the transport alone, and the log alone.
    client = WebhookClient(parse_networks(["127.0.0.1"]))
    secret, bare = new_secret(), []
    for i in range(n):
        body = b'{"bare": true}'
        headers = signed_headers(secret, f"bare-{i}", body.decode()) | {"x-bench": f"bare-{i}"}
        t0 = time.perf_counter()
        await client.post(url, body, headers, timeout=10)
        bare.append(receiver.arrivals[f"bare-{i}"] - t0)
    await client.close()
    log_floor = []
    for i in range(n):
        head = await store.head_position()
        t0 = time.perf_counter()
        await store.append("bench-wake", ANY_VERSION, [JobSucceeded(job_id="x", run_id=None, table_id="x",
                                                                   statistics=JobStatistics())], ME)
        async for _ in store.subscribe(head, types=["JobSucceeded"]):
            log_floor.append(time.perf_counter() - t0)
            break

    def row(label: str, value: str, extra: str = "") -> None:
        print(f"  {label:<52} {value:>18} {extra}")

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    print(f"\ncompletion callbacks, {n} one after another and {burst} at once "
          f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)")
    row("event -> POST received, p50 (ms)", f"{ms(sequential, 50):.1f}")
    row("event -> POST received, p99 (ms)", f"{ms(sequential, 99):.1f}", "target <= 1000")
    row(f"burst of {burst}: p50 / p99 (ms)", f"{ms(bursty, 50):.1f} / {ms(bursty, 99):.1f}", "target <= 1000")
    row("baseline: bare signed POST p50 / p99 (ms)", f"{ms(bare, 50):.2f} / {ms(bare, 99):.2f}")
    row("baseline: append -> subscriber p50 / p99 (ms)", f"{ms(log_floor, 50):.2f} / {ms(log_floor, 99):.2f}")
    row("p99 ratio to bare POST + two log hops", f"{ms(sequential, 99) / (ms(bare, 99) + 2 * ms(log_floor, 99)):.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.burst))

"""The crash test (issue 4, item 6): ``kill -9`` at random moments of a 50-table run.

``maestro serve`` runs as a real process on a test database (``MAESTRO_DATABASE_URL``) with a data
dir for the local stack. It plans a run of a 50-table DAG (five levels; every table reads one to
three tables of the level above, some also one further up), and while the run goes on the test
SIGKILLs the process again and again, starting it anew each time on the same data dir, until the
run is over (at least 3 kills, at most 12). Every other kill comes 50 to 700 ms after the process
answers ``/healthz`` (during recovery, or while jobs are planned, sent and polled); the others are
aimed at the narrow window between ``JobPlanned`` and ``jobs.insert``: the test watches for a job
recorded as planned that local-bigquery does not know yet, and kills at once (or after a random
0.5–3 s). The local BigQuery survives each kill (it is in its own session) and is re-used.

At the end:
- the run is ``succeeded`` and ``RunFinished`` is in the log once;
- on the emulator (``jobs.list``), every table has exactly one successful job, every job there was
  recorded (``JobPlanned``) before it was sent, and every finished job has its outcome in the log
  (no completion lost);
- in the log, every table has exactly one ``JobSucceeded``;
- every table was *executed* exactly once, in dependency order: tables are written with
  WRITE_APPEND, so a second execution would leave two rows; each holds one row whose ``n`` is the
  sum of its parents' row counts at the time it ran (each parent: exactly 1).

Which windows the kills hit is read back from the log and printed (``-s``): jobs planned before a
kill and submitted after it (never sent, or sent and adopted on 409), jobs submitted before a kill
and finished after it (re-attached while polling).

    .venv/bin/pytest tests/integration/test_crash.py -s    # MAESTRO_CRASH_SEED=n to replay,
                                                           # MAESTRO_CRASH_TIMELINE=file for a timeline
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.slow

MAESTRO = str(Path(sys.executable).with_name("maestro"))
DATASET = "crash"
LEVELS = 5
PER_LEVEL = 10
MIN_KILLS = 3
MAX_KILLS = 12  # after that the run may finish in peace
RUN_TIMEOUT = 240.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _catalog(rng: random.Random) -> list[tuple[str, list[str]]]:
    """(name, parents) for 50 tables in 5 levels; parents come from earlier levels."""
    levels = [[f"l{lv}_t{i}" for i in range(PER_LEVEL)] for lv in range(LEVELS)]
    tables = [(name, []) for name in levels[0]]
    for lv in range(1, LEVELS):
        for name in levels[lv]:
            parents = rng.sample(levels[lv - 1], rng.randint(1, 3))
            if lv >= 2 and rng.random() < 0.3:
                parents.append(rng.choice(levels[rng.randrange(lv - 1)]))
            tables.append((name, sorted(set(parents))))
    return tables


def _query(name: str, parents: list[str]) -> str:
    if not parents:
        return f"SELECT '{name}' AS name, 1 AS n"
    counts = " + ".join(f"(SELECT COUNT(*) FROM {DATASET}.{p})" for p in parents)
    return f"SELECT '{name}' AS name, {counts} AS n"


class Serve:
    """``maestro serve`` as a child process that the test kills and restarts."""

    def __init__(self, data_dir: Path, dsn: str, log: Path) -> None:
        self.data_dir, self.log, self.port = data_dir, log, _free_port()
        # Maestro's settings come from us alone; where the local stack is installed, from outside.
        keep = ("MAESTRO_LOCALBQ_VENV", "MAESTRO_FAKE_GCS_SERVER")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_") or k in keep}
        self.env.update(MAESTRO_DATA_DIR=str(data_dir), MAESTRO_DATABASE_URL=dsn, MAESTRO_LOG_LEVEL="INFO")
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            out.write(f"\n===== start at {time.time():.3f} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [MAESTRO, "serve", "--port", str(self.port)], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_healthy(self, timeout: float = 90) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"maestro serve exited:\n{self.tail()}"
            try:
                if self.call("GET", "/healthz", auth=False)["status"] == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"maestro serve did not become healthy:\n{self.tail()}")

    def call(self, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            if self.token is None:
                self.token = (self.data_dir / "bootstrap-token").read_text().strip()
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: {error.code} {error.read()[:2000]!r}") from None

    def kill(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        at = time.time()
        self.proc.wait(timeout=30)
        return at

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def tail(self, limit: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-limit:] if self.log.exists() else "(no log)"


def _stop_local_stack(data_dir: Path) -> None:
    """Whatever local-bigquery / fake-gcs-server pair is still running on the data dir."""
    from maestro.adapters.localstack import _recorded_stack

    stack = _recorded_stack(data_dir / "localstack", "maestro-local")
    if stack is not None:
        stack.stop_sync()


async def _until_planned_but_unsent(conn: asyncpg.Connection, data_dir: Path, run_id: str, timeout: float) -> None:
    """Return as soon as a job is recorded as planned that local-bigquery has not received yet
    (the narrow window between JobPlanned and jobs.insert), or after ``timeout``."""
    from maestro.adapters.localstack import _recorded_stack

    stack = _recorded_stack(data_dir / "localstack", "maestro-local")
    base = f"{stack.bigquery_endpoint}/bigquery/v2/projects/maestro-local/jobs/" if stack else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and base is not None:
        planned = await conn.fetch("SELECT job_id FROM jobs WHERE run_id = $1 AND state = 'planned'", run_id)
        for row in planned:
            if row["job_id"] in seen:
                continue
            seen.add(row["job_id"])
            try:
                opener.open(base + row["job_id"], timeout=2).close()
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return
            except OSError:
                pass
        await asyncio.sleep(0.002)


def _emulator_jobs(data_dir: Path) -> list:
    """Every job local-bigquery knows, read while it still runs."""
    from maestro.adapters.localstack import _recorded_stack, bigquery_client

    stack = _recorded_stack(data_dir / "localstack", "maestro-local")
    assert stack is not None and stack.alive(), "the local stack is not running"
    client = bigquery_client(stack)
    try:
        return list(client.list_jobs(all_users=True))
    finally:
        client.close()


def _table_rows(data_dir: Path, names: list[str]) -> dict[str, list[tuple[str, int]]]:
    from maestro.adapters.localstack import _recorded_stack, bigquery_client

    stack = _recorded_stack(data_dir / "localstack", "maestro-local")
    assert stack is not None
    client = bigquery_client(stack)
    try:
        union = " UNION ALL ".join(f"SELECT '{n}' AS t, name, n FROM `maestro-local.{DATASET}.{n}`" for n in names)
        rows = client.query(union, job_retry=None).result()
        out: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
        for r in rows:
            out[r["t"]].append((r["name"], r["n"]))
        return out
    finally:
        client.close()


async def test_kill_9_at_random_moments_loses_and_duplicates_nothing(dsn: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("MAESTRO_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"\ncrash test seed {seed} (MAESTRO_CRASH_SEED={seed} replays the catalog and the kill delays)")
    data_dir = tmp_path / "data"
    serve = Serve(data_dir, dsn, tmp_path / "serve.log")
    catalog = _catalog(rng)
    parents_of = dict(catalog)
    kills: list[tuple[float, float]] = []  # (killed at, healthy again at), wall clock
    try:
        serve.start()
        await asyncio.to_thread(serve.wait_healthy)
        freq = serve.call("POST", "/api/v1/frequencies", {"name": "crash", "period": 86400, "offset": 0})["id"]
        ids: dict[str, str] = {}
        for name, parents in catalog:
            body = {"dataset": DATASET, "name": name, "query": _query(name, parents),
                    "frequency_id": freq, "write_disposition": "append"}
            ids[name] = serve.call("POST", "/api/v1/tables", body)["id"]
        names = {tid: name for name, tid in ids.items()}
        run_id = serve.call("POST", "/api/v1/runs", {"frequency_id": freq})["id"]
        run = serve.call("GET", f"/api/v1/runs/{run_id}")
        assert len(run["tables"]) == len(catalog)
        # The catalog inferred exactly the DAG we wrote (so the run's order is the one we check).
        edges = {(names[e["parent"]], names[e["child"]]) for e in run["graph"]["edges"]}
        ancestors: dict[str, set[str]] = {}
        for name, parents in catalog:  # in level order
            ancestors[name] = set(parents).union(*(ancestors[p] for p in parents))
        assert edges == {(a, c) for c in ancestors for a in ancestors[c]}

        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            first_delay = rng.uniform(0.0, 0.7)  # the first kill: soon after the run was planned
            await asyncio.sleep(first_delay)
            while True:
                status = await conn.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
                if status != "running" and len(kills) >= MIN_KILLS:
                    break
                if status != "running":
                    # Finished before enough kills landed: that would be a weak test.
                    pytest.fail(f"the run finished after only {len(kills)} kills; make it longer")
                if len(kills) >= MAX_KILLS:
                    await asyncio.sleep(0.1)
                    assert time.monotonic() < deadline, f"run not finished:\n{serve.tail()}"
                    continue
                killed_at = serve.kill()
                serve.start()
                await asyncio.to_thread(serve.wait_healthy)
                kills.append((killed_at, time.time()))
                if len(kills) % 2:
                    await asyncio.sleep(rng.uniform(0.05, 0.7))
                else:
                    await _until_planned_but_unsent(conn, data_dir, run_id, timeout=rng.uniform(0.5, 3.0))
                assert time.monotonic() < deadline, f"run not finished:\n{serve.tail()}"

            # ---------------------------------------------------------------- the verdict
            run = serve.call("GET", f"/api/v1/runs/{run_id}")
            assert run["status"] == "succeeded", [(t["name"], t["state"], t["error"]) for t in run["tables"]]
            finished = await conn.fetchval(
                "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'RunFinished'", f"run-{run_id}"
            )
            assert finished == 1

            events = await conn.fetch(
                "SELECT stream_id, type, data::text, occurred_at FROM events WHERE stream_id LIKE 'job-%' "
                "ORDER BY position"
            )
            jobs_rows = await conn.fetch(
                "SELECT job_id, table_id, state, adopted, attempt FROM jobs WHERE run_id = $1", run_id
            )
        finally:
            await conn.close()

        log: dict[str, dict[str, list]] = {}
        for e in events:
            data = json.loads(e["data"])
            log.setdefault(data["job_id"], {}).setdefault(e["type"], []).append((data, e["occurred_at"].timestamp()))
        succeeded = Counter(
            recs["JobSucceeded"][0][0]["table_id"] for recs in log.values() if "JobSucceeded" in recs
        )
        assert all(len(recs.get("JobSucceeded", [])) <= 1 for recs in log.values())
        assert succeeded == Counter({tid: 1 for tid in names}), "each table: exactly one JobSucceeded in the log"

        bq_jobs = await asyncio.to_thread(_emulator_jobs, data_dir)
        ours = [j for j in bq_jobs if j.job_id.startswith("maestro_query_")]
        ok = Counter(j.labels["maestro_table"] for j in ours if j.state == "DONE" and j.error_result is None)
        assert ok == Counter({tid: 1 for tid in names}), "each table: exactly one successful BigQuery job"
        assert len({j.job_id for j in ours}) == len(ours)
        assert all(j.state == "DONE" for j in ours), [(j.job_id, j.state) for j in ours if j.state != "DONE"]
        for job in ours:
            recs = log.get(job.job_id)
            assert recs is not None and "JobPlanned" in recs, f"{job.job_id} ran without a JobPlanned"
            outcome = "JobSucceeded" if job.error_result is None else "JobFailed"
            assert outcome in recs, f"{job.job_id} is DONE on BigQuery but its {outcome} is not in the log"
        planned = {jid for jid, recs in log.items() if "JobPlanned" in recs and recs["JobPlanned"][0][0]["run_id"] == run_id}
        assert planned == {j.job_id for j in ours}, "every planned job reached BigQuery, and nothing else did"

        rows = await asyncio.to_thread(_table_rows, data_dir, list(ids))
        for name, got in rows.items():
            expected = len(parents_of[name]) or 1
            assert got == [(name, expected)], f"{name}: {got} (one execution, after each parent's one row)"

        # ---------------------------------------------------------------- what the kills hit
        def life(at: float) -> int:
            return sum(1 for killed, _ in kills if killed < at)

        windows = Counter()
        for recs in log.values():
            if "JobPlanned" not in recs or recs["JobPlanned"][0][0]["run_id"] != run_id:
                continue
            planned_in = life(recs["JobPlanned"][0][1])
            sub = recs.get("JobSubmitted")
            done = (recs.get("JobSucceeded") or recs.get("JobFailed") or [(None, None)])[0][1]
            if sub and life(sub[0][1]) > planned_in:
                windows["sent before the kill, adopted after" if sub[0][0]["adopted"] else "planned before the kill, sent after"] += 1
            if sub and done is not None and life(done) > life(sub[0][1]):
                windows["re-attached while polling"] += 1
        if os.environ.get("MAESTRO_CRASH_TIMELINE"):
            t0 = kills[0][0] - 5
            with open(os.environ["MAESTRO_CRASH_TIMELINE"], "w") as f:
                f.write(f"kills {[(round(k - t0, 3), round(h - t0, 3)) for k, h in kills]}\n")
                for jid, recs in log.items():
                    f.write(jid[-20:] + " " + " ".join(f"{t}@{round(v[0][1] - t0, 3)}" for t, v in recs.items()) + "\n")
        adopted = sum(1 for r in jobs_rows if r["adopted"])
        failed_attempts = sum(1 for j in ours if j.error_result is not None)
        print(
            f"crash test: {len(kills)} kills, run {run['status']}, {len(ours)} BigQuery jobs for "
            f"{len(names)} tables ({failed_attempts} failed attempts retried), jobs.adopted = {adopted}; "
            f"windows hit: {dict(windows)}"
        )
        assert adopted == windows["sent before the kill, adopted after"]
    finally:
        try:
            serve.stop()
        finally:
            _stop_local_stack(data_dir)

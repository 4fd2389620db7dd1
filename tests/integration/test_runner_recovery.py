"""The runner against a scripted BigQuery: decisions on a deep DAG, and re-attaching at start-up.

No emulator here: ``ScriptedBigQuery`` answers at once and records every call, so the tests can
say exactly which requests the runner made (the crash test, tests/integration/test_crash.py,
does the same against local-bigquery with real kills).
"""

from __future__ import annotations

import asyncio
import random

from maestro.adapters.bigquery import JobState, job_id_for
from maestro.adapters.bigquery_errors import JobError
from maestro.events import Metadata
from maestro.events.catalog import FrequencySpec, TableSpec
from maestro.events.runs import JobPlanned, JobStatistics, JobSubmitted
from maestro.events.store import NO_STREAM
from maestro.handlers.runs.runner import Runner, RunnerConfig

ME = Metadata(actor="user:tests")


class ScriptedBigQuery:
    """Jobs finish as soon as they are inserted (queries on ``failing`` destinations fail);
    ``running`` jobs answer RUNNING to their first ``get``."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.jobs: dict[str, JobState] = {}
        self.running: set[str] = set()
        self.inserts: list[str] = []
        self.gets: list[str] = []
        self.lists = 0

    def add(self, job_id: str, state: str = "DONE") -> None:
        self.jobs[job_id] = JobState(job_id, "DONE", None, JobStatistics(total_bytes_billed=10), [])
        if state != "DONE":
            self.running.add(job_id)

    def _answer(self, job_id: str) -> JobState:
        job = self.jobs[job_id]
        return JobState(job_id, "RUNNING", None, job.statistics, []) if job_id in self.running else job

    async def submit(self, job_id, config) -> bool:
        self.inserts.append(job_id)
        if job_id in self.jobs:
            return False
        error = JobError("invalidQuery", "no such column", False) if config.destination in self.failing else None
        self.jobs[job_id] = JobState(job_id, "DONE", error, JobStatistics(), [])
        return True

    async def get(self, job_id: str, *, project: str | None = None):
        self.gets.append(job_id)
        if job_id not in self.jobs:
            return None
        answer = self._answer(job_id)
        self.running.discard(job_id)  # RUNNING once, then DONE
        return answer

    async def cancel(self, job_id: str, *, project: str | None = None) -> None:
        pass

    async def list_states(self, *, since):
        self.lists += 1
        return {job_id: self._answer(job_id) for job_id in self.jobs}


async def _catalog(runtime, name: str, parents_of: dict[str, list[str]]) -> tuple[str, dict[str, str]]:
    freq = await runtime.catalog.create_frequency(FrequencySpec(name=name, period=86400), ME)
    ids = {}
    for table, parents in parents_of.items():
        query = "SELECT 1 AS x" if not parents else " UNION ALL ".join(f"SELECT x FROM {name}.{p}" for p in parents)
        view = await runtime.catalog.create_table(TableSpec(dataset=name, name=table, query=query, frequency_id=freq), ME)
        ids[table] = view.table_id
    return freq, ids


async def _finished(runtime, run_id: str, timeout: float = 60) -> str:
    for _ in range(int(timeout / 0.02)):
        status = await runtime.pool.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
        if status != "running":
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish")


async def test_deep_dag_runs_in_order_and_a_failure_skips_exactly_its_descendants(runtime) -> None:
    rng = random.Random(5)
    levels = [[f"l{lv}_{i}" for i in range(6)] for lv in range(12)]
    parents_of = {name: [] for name in levels[0]}
    for lv in range(1, len(levels)):
        for name in levels[lv]:
            parents_of[name] = sorted(rng.sample(levels[lv - 1], rng.randint(1, 2)))
    freq, ids = await _catalog(runtime, "deep", parents_of)
    bad = "l3_2"
    descendants: set[str] = set()
    for lv in range(4, len(levels)):
        for name in levels[lv]:
            if bad in parents_of[name] or descendants & set(parents_of[name]):
                descendants.add(name)
    assert descendants, "the seed gives the failing table descendants"

    bigquery = ScriptedBigQuery(failing=frozenset({f"maestro-local.deep.{bad}"}))
    runner = Runner(runtime.store, bigquery, job_id_for, RunnerConfig(workers=4, poll_initial=0.001))
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "failed"
    finally:
        await runner.stop()

    names = {tid: name for name, tid in ids.items()}
    states = {names[r["table_id"]]: r["state"] for r in await runtime.pool.fetch(
        "SELECT table_id, state FROM run_tables WHERE run_id = $1", run_id)}
    assert states[bad] == "failed"
    assert {n for n, s in states.items() if s == "skipped"} == descendants
    assert {n for n, s in states.items() if s == "succeeded"} == set(parents_of) - descendants - {bad}
    # Order: every job was planned after each of its parents' success was recorded.
    positions: dict[tuple[str, str], int] = {}
    for r in await runtime.pool.fetch(
        "SELECT type, position, data->>'table_id' AS table_id FROM events "
        "WHERE type IN ('JobPlanned', 'JobSucceeded') AND data->>'run_id' = $1", run_id,
    ):
        positions[(r["type"], names[r["table_id"]])] = r["position"]
    for name, parents in parents_of.items():
        if ("JobPlanned", name) in positions:
            assert all(positions[("JobSucceeded", p)] < positions[("JobPlanned", name)] for p in parents)
    assert len(bigquery.inserts) == len(parents_of) - len(descendants)
    finished = await runtime.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'RunFinished'", f"run-{run_id}")
    assert finished == 1


async def test_start_up_reattaches_through_one_listing_and_inserts_only_what_bigquery_never_saw(runtime) -> None:
    """The crash left: t1 submitted and recorded (DONE since), t2 inserted but not recorded
    (still RUNNING), t3 planned but never sent, t4 not even planned."""
    freq, ids = await _catalog(runtime, "rec", {"t1": [], "t2": [], "t3": [], "t4": []})
    run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
    config = {r["table_id"]: r["config"] for r in await runtime.pool.fetch(
        "SELECT table_id, config::text AS config FROM run_tables WHERE run_id = $1", run_id)}
    from maestro.events.runs import JobConfig

    job = {name: job_id_for(run_id, tid, 1) for name, tid in ids.items()}
    for name in ("t1", "t2", "t3"):
        planned = JobPlanned(job_id=job[name], run_id=run_id, table_id=ids[name],
                             config=JobConfig.model_validate_json(config[ids[name]]))
        await runtime.store.append(f"job-{job[name]}", NO_STREAM, [planned], ME)
    await runtime.store.append(f"job-{job['t1']}", 1, [JobSubmitted(job_id=job["t1"], run_id=run_id)], ME)
    bigquery = ScriptedBigQuery()
    bigquery.add(job["t1"])
    bigquery.add(job["t2"], "RUNNING")

    runner = Runner(runtime.store, bigquery, job_id_for, RunnerConfig(workers=4, poll_initial=0.001))
    await runner.start()
    try:
        assert await _finished(runtime, run_id) == "succeeded"
    finally:
        await runner.stop()
    assert bigquery.lists == 1
    assert sorted(bigquery.inserts) == sorted([job["t3"], job["t4"]])  # never a second insert
    assert job["t1"] not in bigquery.gets  # DONE in the listing: recorded without a get
    assert bigquery.gets.count(job["t2"]) >= 1  # RUNNING in the listing: polled
    adopted = dict(await runtime.pool.fetch("SELECT table_id, adopted FROM jobs WHERE run_id = $1", run_id))
    assert adopted == {ids["t1"]: False, ids["t2"]: True, ids["t3"]: False, ids["t4"]: False}
    billed = await runtime.pool.fetchval(
        "SELECT (statistics->>'total_bytes_billed')::int FROM jobs WHERE job_id = $1", job["t1"])
    assert billed == 10  # the listing's statistics were recorded


async def test_a_run_that_finishes_during_start_up_is_finished_once(runtime) -> None:
    """Start-up walks the unfinished runs while re-attached jobs already complete: run A has
    twenty tables to skip (each an append), and meanwhile run B's only job, found DONE, ends run
    B. Walking on to B must not finish it a second time (two RunFinished)."""
    from maestro.events.runs import JobConfig, JobFailed

    a_tables = {"bad": [], **{f"c{i}": ["bad"] for i in range(20)}}
    freq_a, ids_a = await _catalog(runtime, "fa", a_tables)
    freq_b, ids_b = await _catalog(runtime, "fb", {"only": []})
    run_a, _ = await runtime.runs.plan_frequency(freq_a, slot=None, trigger="manual", actor=ME)
    run_b, _ = await runtime.runs.plan_frequency(freq_b, slot=None, trigger="manual", actor=ME)

    async def planned(run_id: str, table_id: str) -> str:
        cfg = await runtime.pool.fetchval(
            "SELECT config::text FROM run_tables WHERE run_id = $1 AND table_id = $2", run_id, table_id)
        job_id = job_id_for(run_id, table_id, 1)
        await runtime.store.append(f"job-{job_id}", NO_STREAM, [JobPlanned(
            job_id=job_id, run_id=run_id, table_id=table_id, config=JobConfig.model_validate_json(cfg))], ME)
        await runtime.store.append(f"job-{job_id}", 1, [JobSubmitted(job_id=job_id, run_id=run_id)], ME)
        return job_id

    bad = await planned(run_a, ids_a["bad"])
    await runtime.store.append(f"job-{bad}", 2, [JobFailed(
        job_id=bad, run_id=run_a, table_id=ids_a["bad"], reason="invalidQuery", message="no", retryable=False)], ME)
    bigquery = ScriptedBigQuery()
    bigquery.add(await planned(run_b, ids_b["only"]))

    runner = Runner(runtime.store, bigquery, job_id_for, RunnerConfig(workers=4, poll_initial=0.001))
    await runner.start()
    try:
        assert await _finished(runtime, run_a) == "failed"
        assert await _finished(runtime, run_b) == "succeeded"
        await asyncio.sleep(0.2)
    finally:
        await runner.stop()
    for run_id in (run_a, run_b):
        finished = await runtime.pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'RunFinished'", f"run-{run_id}")
        assert finished == 1, run_id

"""Runs always end: every failure is a JobFailed with a reason, one RunFinished per attempt of a
run, and nothing waits forever (issue 8, items 2, 3, 5, 7).

The runner's decisions against a scripted BigQuery (tests/integration/test_runner_recovery.py's),
on real PostgreSQL; the refusals at jobs.insert go through the real client and a fault proxy in
front of local-bigquery (test_runs_faults_proxy.py)."""

from __future__ import annotations

import asyncio

from maestro.adapters.bigquery import JobState, job_id_for
from maestro.adapters.bigquery_errors import JobError
from maestro.events.catalog import ExtractSettings, FrequencySpec, TableSpec
from maestro.events.runs import JobStatistics
from maestro.handlers.runs.recovery import load_run
from maestro.handlers.runs.runner import Runner, RunnerConfig
from maestro.handlers.runs.state import RunState

from test_runner_recovery import ME, ScriptedBigQuery, _catalog, _finished

FAST = RunnerConfig(workers=4, poll_initial=0.001, retry_delay=0.01)


async def _events(runtime, stream: str) -> list[str]:
    return [r["type"] for r in await runtime.pool.fetch(
        "SELECT type FROM events WHERE stream_id = $1 ORDER BY version", stream)]


async def _job_events(runtime, run_id: str) -> list[dict]:
    return [dict(r) for r in await runtime.pool.fetch(
        "SELECT type, data->>'table_id' AS table_id, data->>'reason' AS reason, data->>'retryable' AS retryable, "
        "data->>'job_id' AS job_id FROM events WHERE data->>'run_id' = $1 AND type LIKE 'Job%' ORDER BY position",
        run_id)]


class Forever(ScriptedBigQuery):
    """Jobs are accepted and never end, until cancelled (then DONE "stopped", having billed)."""

    def __init__(self, billed: int = 0) -> None:
        super().__init__()
        self.billed = billed
        self.cancelled: list[str] = []

    async def submit(self, job_id, config) -> bool:
        self.inserts.append(job_id)
        self.jobs[job_id] = JobState(job_id, "RUNNING", None, JobStatistics(total_bytes_billed=self.billed), [])
        return True

    async def get(self, job_id, *, project=None):
        self.gets.append(job_id)
        return self.jobs.get(job_id)

    async def cancel(self, job_id, *, project=None) -> None:
        self.cancelled.append(job_id)
        stats = JobStatistics(total_bytes_billed=self.billed, total_bytes_processed=self.billed)
        self.jobs[job_id] = JobState(job_id, "DONE", JobError("stopped", "Job cancelled", False), stats, [])


async def test_a_job_past_its_deadline_is_cancelled_and_fails_with_timeout(runtime) -> None:
    freq, ids = await _catalog(runtime, "slow", {"t": [], "after": ["t"]})
    bigquery = Forever(billed=5)
    runner = Runner(runtime.store, bigquery, job_id_for, RunnerConfig(workers=4, poll_initial=0.01, job_timeout=0.5))
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id, timeout=20) == "failed"
    finally:
        await runner.stop()
    jobs = await _job_events(runtime, run_id)
    failed = [j for j in jobs if j["type"] == "JobFailed"]
    assert [(j["table_id"], j["reason"], j["retryable"]) for j in failed] == [(ids["t"], "timeout", "false")]
    assert bigquery.cancelled == [failed[0]["job_id"]]
    await runtime.projections.catch_up("costs")  # what it billed before the cancel counts
    assert await runtime.pool.fetchval("SELECT bytes_billed FROM cost_jobs WHERE table_id = $1", ids["t"]) == 5
    skipped = [j for j in jobs if j["type"] == "JobSkipped"]
    assert [(j["table_id"], j["reason"]) for j in skipped] == [(ids["after"], "upstream_failed")]


async def test_a_failure_listing_extract_files_fails_the_table_and_ends_the_run(runtime) -> None:
    freq = await runtime.catalog.create_frequency(FrequencySpec(name="xf", period=86400), ME)
    await runtime.catalog.create_table(TableSpec(
        dataset="xf", name="t", query="SELECT 1 AS x", frequency_id=freq, extract=ExtractSettings()), ME)

    async def files(_uris, _counts):
        raise RuntimeError("GCS listing refused")

    runner = Runner(runtime.store, ScriptedBigQuery(), job_id_for, FAST, extract_files=files)
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "failed"
        assert runner.in_flight == 0
    finally:
        await runner.stop()
    failed = [j for j in await _job_events(runtime, run_id) if j["type"] == "JobFailed"]
    assert [j["reason"] for j in failed] == ["extract_files"]
    assert "GCS listing refused" in await runtime.pool.fetchval(
        "SELECT error FROM run_tables WHERE run_id = $1", run_id)


class FailsOnce(ScriptedBigQuery):
    """The first extract job fails; everything else succeeds."""

    def __init__(self) -> None:
        super().__init__()
        self.extract_failed = False

    async def submit(self, job_id, config) -> bool:
        self.inserts.append(job_id)
        error = None
        if config.kind == "extract" and not self.extract_failed:
            self.extract_failed = True
            error = JobError("invalid", "the bucket refused the write", False)
        self.jobs[job_id] = JobState(job_id, "DONE", error, JobStatistics(), config.destination_uris)
        return True


async def test_retrying_a_run_whose_extract_failed_extracts_again_under_a_new_job_id(runtime) -> None:
    freq = await runtime.catalog.create_frequency(FrequencySpec(name="xr", period=86400), ME)
    await runtime.catalog.create_table(TableSpec(
        dataset="xr", name="t", query="SELECT 1 AS x", frequency_id=freq, extract=ExtractSettings()), ME)
    bigquery = FailsOnce()
    runner = Runner(runtime.store, bigquery, job_id_for, FAST)
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "failed"
        await runtime.runs.retry(run_id, ME)
        assert await _finished(runtime, run_id) == "succeeded"
    finally:
        await runner.stop()
    extracts = [j for j in bigquery.inserts if j.startswith("maestro_extract_")]
    assert len(extracts) == 2 and len(set(extracts)) == 2


class Flaky(ScriptedBigQuery):
    """Every query fails with a retryable backend error."""

    async def submit(self, job_id, config) -> bool:
        self.inserts.append(job_id)
        self.jobs[job_id] = JobState(job_id, "DONE", JobError("backendError", "try later", True), JobStatistics(), [])
        return True


async def test_a_retried_run_gets_its_attempts_anew(runtime) -> None:
    freq = await runtime.catalog.create_frequency(FrequencySpec(name="ra", period=86400), ME)
    await runtime.catalog.create_table(TableSpec(
        dataset="ra", name="t", query="SELECT 1 AS x", frequency_id=freq, max_attempts=2), ME)
    bigquery = Flaky()
    runner = Runner(runtime.store, bigquery, job_id_for, FAST)
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "failed"
        assert len(bigquery.inserts) == 2
        await runtime.runs.retry(run_id, ME)
        assert await _finished(runtime, run_id) == "failed"
    finally:
        await runner.stop()
    assert len(bigquery.inserts) == 4 and len(set(bigquery.inserts)) == 4  # two more, new ids
    assert (await _events(runtime, f"run-{run_id}")).count("RunFinished") == 2  # one per attempt


async def test_a_cancel_that_lands_while_the_run_finishes_still_ends_it_once(runtime) -> None:
    freq, _ = await _catalog(runtime, "race", {"t": []})
    runner = Runner(runtime.store, ScriptedBigQuery(), job_id_for, FAST)
    store = runtime.store
    real_read = store.read
    raced: list[str] = []

    async def read_then_cancel(stream_id, *args, **kwargs):
        events = await real_read(stream_id, *args, **kwargs)
        if stream_id.startswith("run-") and not raced:
            # The cancel commits after the runner read the run's stream, before it appends.
            raced.append(stream_id)
            await runtime.runs.cancel(stream_id.removeprefix("run-"), ME)
        return events

    store.read = read_then_cancel  # type: ignore[method-assign]
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "succeeded"  # the cancel came too late
    finally:
        await runner.stop()
        store.read = real_read  # type: ignore[method-assign]
    assert raced
    types = await _events(runtime, f"run-{run_id}")
    assert types == ["RunPlanned", "RunCancelRequested", "RunFinished"]


async def test_a_finished_run_is_never_finished_twice(runtime) -> None:
    freq, _ = await _catalog(runtime, "twice", {"t": []})
    runner = Runner(runtime.store, ScriptedBigQuery(), job_id_for, FAST)
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "succeeded"
        # A stale copy of the run (another leader's, an event replayed at start-up) finishing it.
        assert await load_run(runner, run_id) is None
        await runner._finish(RunState(run_id, {}, None))
    finally:
        await runner.stop()
    assert (await _events(runtime, f"run-{run_id}")).count("RunFinished") == 1


async def test_a_cancelled_job_that_billed_counts_in_costs(runtime) -> None:
    freq, ids = await _catalog(runtime, "cb", {"t": []})
    bigquery = Forever(billed=10 * 2**30)
    runner = Runner(runtime.store, bigquery, job_id_for, FAST)
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        for _ in range(500):
            if bigquery.inserts:
                break
            await asyncio.sleep(0.01)
        await runtime.runs.cancel(run_id, ME)
        assert await _finished(runtime, run_id) == "cancelled"
    finally:
        await runner.stop()
    assert [j["type"] for j in await _job_events(runtime, run_id)][-1] == "JobCancelled"
    await runtime.projections.catch_up("costs")
    billed = await runtime.pool.fetchval("SELECT bytes_billed FROM cost_jobs WHERE table_id = $1", ids["t"])
    assert billed == 10 * 2**30


async def test_a_run_plan_that_commits_late_with_a_lower_position_is_executed(runtime) -> None:
    """An append takes its position, then waits (here: on a lock its inline projection needs)
    while a later append commits. A runner starting at max(position) never sees the first."""
    freq, _ = await _catalog(runtime, "late", {"t": []})
    locker = await runtime.pool.acquire()
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE")
    plan = asyncio.ensure_future(runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME))
    for _ in range(500):  # until the plan's append holds its position and waits on the lock
        waiting = await runtime.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
        if waiting:
            break
        await asyncio.sleep(0.01)
    assert waiting
    await runtime.catalog.create_frequency(FrequencySpec(name="later", period=86400), ME)  # commits above it
    runner = Runner(runtime.store, ScriptedBigQuery(), job_id_for, FAST)
    await runner.start()
    try:
        await tx.commit()
        await runtime.pool.release(locker)
        run_id, _ = await plan
        assert await _finished(runtime, run_id, timeout=20) == "succeeded"
    finally:
        await runner.stop()


async def test_a_retried_run_records_its_skips_again(runtime) -> None:
    freq, ids = await _catalog(runtime, "rskip", {"bad": [], "child": ["bad"]})
    runner = Runner(runtime.store, ScriptedBigQuery(failing=frozenset({"maestro-local.rskip.bad"})), job_id_for, FAST)
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "failed"
        await runtime.runs.retry(run_id, ME)
        assert await _finished(runtime, run_id) == "failed"
    finally:
        await runner.stop()
    # Before: the second skip reused the first one's stream and was dropped; the child stayed pending.
    assert await runtime.pool.fetchval(
        "SELECT state FROM run_tables WHERE run_id = $1 AND table_id = $2", run_id, ids["child"]) == "skipped"
    skips = [j for j in await _job_events(runtime, run_id) if j["type"] == "JobSkipped"]
    assert len(skips) == 2 and len({j["job_id"] for j in skips}) == 2


async def test_a_recovered_job_bigquery_does_not_know_is_inserted_once_and_not_failed(runtime) -> None:
    from maestro.events.runs import JobConfig, JobPlanned, JobSubmitted
    from maestro.events.store import NO_STREAM

    freq, ids = await _catalog(runtime, "lost", {"t": []})
    run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
    cfg = await runtime.pool.fetchval("SELECT config::text FROM run_tables WHERE run_id = $1", run_id)
    job_id = job_id_for(run_id, ids["t"], 1)
    await runtime.store.append(f"job-{job_id}", NO_STREAM, [JobPlanned(
        job_id=job_id, run_id=run_id, table_id=ids["t"], config=JobConfig.model_validate_json(cfg))], ME)
    await runtime.store.append(f"job-{job_id}", 1, [JobSubmitted(job_id=job_id, run_id=run_id)], ME)
    bigquery = ScriptedBigQuery()  # answers 404 (None) for it: just after a 409, say
    runner = Runner(runtime.store, bigquery, job_id_for, FAST)
    await runner.start()
    try:
        assert await _finished(runtime, run_id) == "succeeded"  # before: failed 'internal' (a conflict)
    finally:
        await runner.stop()
    assert bigquery.inserts == [job_id]
    assert (await _events(runtime, f"job-{job_id}")) == ["JobPlanned", "JobSubmitted", "JobSucceeded"]


class RefusesGet(ScriptedBigQuery):
    """Accepts the insert, then refuses every jobs.get with 403; records cancels."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[str] = []

    async def submit(self, job_id, config) -> bool:
        self.inserts.append(job_id)
        self.jobs[job_id] = JobState(job_id, "RUNNING", None, JobStatistics(total_bytes_billed=7), [])
        return True

    async def get(self, job_id, *, project=None):
        from maestro.errors import BigQueryError

        if job_id in self.cancelled:
            return self.jobs[job_id]
        raise BigQueryError("accessDenied", "Access Denied: jobs.get", retryable=False)

    async def cancel(self, job_id, *, project=None) -> None:
        self.cancelled.append(job_id)


async def test_a_job_refused_after_its_insert_is_cancelled_and_its_bytes_kept(runtime) -> None:
    freq, ids = await _catalog(runtime, "refget", {"t": []})
    bigquery = RefusesGet()
    runner = Runner(runtime.store, bigquery, job_id_for, FAST)
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "failed"
    finally:
        await runner.stop()
    assert bigquery.cancelled == bigquery.inserts  # before: left running in BigQuery, unwatched
    failed = [j for j in await _job_events(runtime, run_id) if j["type"] == "JobFailed"]
    assert [j["reason"] for j in failed] == ["accessDenied"]
    assert await runtime.pool.fetchval(
        "SELECT (statistics->>'total_bytes_billed')::int FROM jobs WHERE run_id = $1", run_id) == 7


class WaitsFail(Forever):
    """Server-side waits always fail (a rate limit); the job ends after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.waits = 0
        self.started: dict[str, float] = {}

    async def submit(self, job_id, config) -> bool:
        import time

        self.started[job_id] = time.monotonic()
        return await super().submit(job_id, config)

    async def wait(self, job_id, *, project=None, timeout):
        from maestro.errors import BigQueryError

        self.waits += 1
        raise BigQueryError("rateLimitExceeded", "Exceeded rate limits", retryable=True)

    async def get(self, job_id, *, project=None):
        import time

        self.gets.append(job_id)
        if time.monotonic() - self.started[job_id] > self.seconds:
            return JobState(job_id, "DONE", None, JobStatistics(), [])
        return self.jobs[job_id]


async def test_failing_waits_fall_back_to_polling_with_backoff(runtime) -> None:
    freq, _ = await _catalog(runtime, "wf", {"t": []})
    bigquery = WaitsFail(seconds=1.5)
    runner = Runner(runtime.store, bigquery, job_id_for, RunnerConfig(poll_initial=0.01, wait_after=0.0))
    await runner.start()
    try:
        run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
        assert await _finished(runtime, run_id) == "succeeded"
    finally:
        await runner.stop()
    assert bigquery.waits + len(bigquery.gets) < 60  # before: tens of thousands in a tight loop


async def test_a_cancelled_run_inserts_nothing_more_and_recovery_cancels_what_runs(runtime) -> None:
    from maestro.events.runs import JobConfig, JobPlanned, JobSubmitted, RunCancelRequested
    from maestro.events.store import NO_STREAM

    freq, ids = await _catalog(runtime, "rc", {"a": [], "b": []})
    run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
    cfg = dict(await runtime.pool.fetch("SELECT table_id, config::text FROM run_tables WHERE run_id = $1", run_id))
    # "a" was inserted and runs; "b" was planned, never sent; then the cancel; then the leader died.
    jobs = {}
    for name in ("a", "b"):
        jobs[name] = job_id_for(run_id, ids[name], 1)
        await runtime.store.append(f"job-{jobs[name]}", NO_STREAM, [JobPlanned(
            job_id=jobs[name], run_id=run_id, table_id=ids[name], config=JobConfig.model_validate_json(cfg[ids[name]]))], ME)
    await runtime.store.append(f"job-{jobs['a']}", 1, [JobSubmitted(job_id=jobs["a"], run_id=run_id)], ME)
    version = await runtime.store.stream_version(f"run-{run_id}")
    await runtime.store.append(f"run-{run_id}", version, [RunCancelRequested(run_id=run_id)], ME)
    bigquery = Forever()
    bigquery.jobs[jobs["a"]] = JobState(jobs["a"], "RUNNING", None, JobStatistics(), [])
    runner = Runner(runtime.store, bigquery, job_id_for, FAST)
    await runner.start()
    try:
        assert await _finished(runtime, run_id, timeout=20) == "cancelled"  # before: ran on
    finally:
        await runner.stop()
    assert jobs["a"] in bigquery.cancelled  # (b too: a cancel of a job BigQuery never saw is a no-op)
    assert bigquery.inserts == []  # "b" is never sent


async def test_a_job_planned_long_ago_and_never_sent_gets_its_full_deadline(runtime) -> None:
    import datetime as dt

    from maestro.events.runs import JobConfig, JobPlanned
    from maestro.events.store import NO_STREAM

    freq, ids = await _catalog(runtime, "old", {"t": []})
    run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
    cfg = await runtime.pool.fetchval("SELECT config::text FROM run_tables WHERE run_id = $1", run_id)
    job_id = job_id_for(run_id, ids["t"], 1)
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)  # the service was down
    await runtime.store.append(f"job-{job_id}", NO_STREAM, [JobPlanned(
        job_id=job_id, run_id=run_id, table_id=ids["t"], config=JobConfig.model_validate_json(cfg))], ME,
        occurred_at=long_ago)
    bigquery = ScriptedBigQuery()
    runner = Runner(runtime.store, bigquery, job_id_for, RunnerConfig(poll_initial=0.001, job_timeout=3600))
    await runner.start()
    try:
        assert await _finished(runtime, run_id) == "succeeded"  # before: inserted, then cancelled 'timeout'
    finally:
        await runner.stop()
    assert bigquery.inserts == [job_id]

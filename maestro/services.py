"""What ``maestro serve`` runs besides HTTP: BigQuery (Google or the local stack), the runner
(on the leader replica only) and the scheduler (on every replica: slot streams keep it to one
run per slot)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from maestro.adapters import google, localstack
from maestro.adapters.bigquery import BigQueryJobs, expand_extract_uris, job_id_for
from maestro.adapters.postgres import LeaderLock
from maestro.handlers.runner import Runner, RunnerConfig
from maestro.handlers.scheduler import Scheduler
from maestro.runtime import Runtime

log = logging.getLogger(__name__)
RUNNER_LOCK = 7283003


@dataclass
class Services:
    runtime: Runtime
    bigquery: BigQueryJobs
    storage: Any
    signer: Any
    stack: localstack.LocalStack | None
    owns_stack: bool
    runner: Runner
    scheduler: Scheduler
    leader: LeaderLock
    _leader_task: asyncio.Task[None] | None = field(default=None)
    is_leader: bool = False

    async def _lead(self) -> None:
        while not await self.leader.try_acquire():
            await asyncio.sleep(self.leader.retry)
        self.is_leader = True
        log.info("this process runs BigQuery jobs (runner leader)")
        await self.runner.start()

    async def close(self) -> None:
        await self.scheduler.stop()
        if self._leader_task is not None:
            self._leader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leader_task
        await self.runner.stop()
        await self.leader.release()
        self.bigquery.close()
        if self.stack is not None and self.owns_stack:
            await self.stack.stop()


async def start_services(runtime: Runtime, *, stack: localstack.LocalStack | None = None) -> Services:
    """Connect BigQuery and start the scheduler and the runner election. ``stack`` given: use
    that local stack and leave it running on close (tests share one)."""
    settings = runtime.settings
    owns_stack = False
    if settings.google_project is not None:
        bq_client, storage_client, signer = google.clients(
            settings.google_project, settings.google_credentials_file, settings.bigquery_location
        )
    else:
        if stack is None:
            stack = await localstack.start_local_stack(settings.data_dir / "localstack", project=settings.project)
            owns_stack = True
        bq_client = localstack.bigquery_client(stack)
        storage_client = localstack.storage_client(stack)
        signer = google.local_signer(settings.data_dir, settings.project)
        await asyncio.to_thread(google.ensure_bucket, storage_client, settings.gcs_bucket)
    # Threads for the blocking client calls: enough for the jobs in flight, but never one per job
    # (workers may be large; a poll is a few milliseconds).
    jobs = BigQueryJobs(bq_client, location=settings.bigquery_location, max_workers=min(settings.workers, 32))

    async def files(uris: list[str]) -> list[str]:
        return await expand_extract_uris(storage_client, uris)

    runner = Runner(
        runtime.store, jobs, job_id_for,
        RunnerConfig(workers=settings.workers, bucket=settings.gcs_bucket),
        extract_files=files,
        ensure_dataset=jobs.ensure_dataset,
    )
    scheduler = Scheduler(runtime.runs, tick=settings.scheduler_tick)
    services = Services(
        runtime, jobs, storage_client, signer, stack, owns_stack, runner, scheduler,
        LeaderLock(runtime.dsn, RUNNER_LOCK),
    )
    runtime.bigquery = jobs
    runtime.services = services
    scheduler.start()
    services._leader_task = asyncio.get_running_loop().create_task(services._lead(), name="runner-leader")
    return services

"""What ``maestro serve`` runs besides HTTP: BigQuery (Google or the local stack), the runner
(on the leader replica only) and the scheduler (on every replica: slot streams keep it to one
run per slot)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from maestro.adapters import google, localstack, malloc
from maestro.adapters.bigquery import BigQueryJobs, expand_extract_uris, job_id_for
from maestro.adapters.bigquery_tables import table_schema
from maestro.adapters.postgres import LeaderLock
from maestro.events.config import ConfigNotApplied
from maestro.events.model import Metadata
from maestro.events.store import ANY_VERSION
from maestro.handlers.notify.exports import ExportContext, ExportPolicy
from maestro.handlers.git.reactor import GitReactor
from maestro.handlers.git.sync import GitSync
from maestro.handlers.notify.wiring import Notify, build_notify
from maestro.handlers.transfers.db_export import ExportLimits
from maestro.handlers.runs.imports import ImportContext
from maestro.handlers.runs.runner import Runner, RunnerConfig
from maestro.handlers.runs.scheduler import Scheduler
from maestro.runtime import Runtime

log = logging.getLogger(__name__)
RUNNER_LOCK = 7283003
RUNNER = "runner"


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
    target: str = ""  # where BigQuery calls go now: "local" or "google:<project>"
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Reactors with side effects (callbacks, ...): run on the leader only, like the runner.
    notify: Notify | None = None

    def on_config_change(self, section: str, _name: str | None) -> None:
        if section == "bigquery":
            task = asyncio.get_running_loop().create_task(self.reconfigure())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def reconfigure(self) -> None:
        """Point BigQuery and Cloud Storage at what the configuration says now, without a restart.

        Jobs in flight keep being polled in their own project (recorded in each job's snapshot).
        """
        try:
            conn = await _connect(self.runtime, self.stack)
        except Exception as exc:
            log.exception("the new BigQuery configuration cannot be used; keeping the old one")
            self.runtime.health.down("bigquery", exc)
            reason = getattr(exc, "message", None) or type(exc).__name__
            with contextlib.suppress(Exception):  # the health entry says it if this cannot land
                await self.runtime.store.append("config-apply-bigquery", ANY_VERSION, [ConfigNotApplied(
                    section="bigquery", reason=f"{reason}; keeping the previous configuration")],
                    Metadata(actor="system:services"))
            return
        self.runtime.health.forget("bigquery")
        if conn.stack is not None and self.stack is None:
            self.stack, self.owns_stack = conn.stack, True
        self.bigquery.use(conn.client, location=conn.location)
        self.storage, self.signer = conn.storage, conn.signer
        self.runner.config = dataclasses.replace(
            self.runner.config, bucket=conn.bucket, server_wait=_server_wait(self.runtime.settings, conn.target)
        )
        self.runner.forget_datasets()
        self.runtime.runs.project = conn.project
        self.target = conn.target
        log.info("BigQuery configuration applied", extra={"target": conn.target, "project": conn.project})

    async def _lead(self) -> None:
        """Be the runner's leader whenever possible, and only while holding the lock.

        Acquire the lock, start the runner (which recovers from the log), then watch both: a
        lost lock (connection terminated, server restarted) or a runner that lost the database
        stops the runner at once — fencing: no job is touched after that — and the loop starts
        over, re-taking leadership when the lock is free again and recovering from the log.
        """
        health = self.runtime.health
        delay = self.leader.retry
        while True:
            try:
                delay = await self._lead_once(delay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never a silent end of leadership
                log.exception("runner leadership loop failed; retrying")
                health.down(RUNNER, exc)
                with contextlib.suppress(Exception):
                    await self._step_down()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _lead_once(self, delay: float) -> float:
        """One term: acquire, start (watched), run until the lock or the database is lost, step
        down. Returns the delay before the next attempt."""
        health = self.runtime.health
        if not await self.leader.try_acquire():
            if self.leader.last_error is not None:
                health.down(RUNNER, "cannot reach PostgreSQL for the leader lock (see the server log)")
            else:
                health.set(RUNNER, "standby", "another replica runs the jobs")
                if self.notify is not None:  # healthy, not down: the step-down said "down"
                    self.notify.host.standby("another replica runs the reactors")
            await asyncio.sleep(self.leader.retry)
            return delay
        self.is_leader = True
        log.info("this process runs BigQuery jobs (runner leader)")
        if self.notify is not None:
            self.notify.start()
        # Watched from the first moment: recovery already re-attaches jobs.
        watch = asyncio.ensure_future(self.leader.watch())
        start = asyncio.ensure_future(self.runner.start())
        try:
            await asyncio.wait({watch, start}, return_when=asyncio.FIRST_COMPLETED)
            if start.done() and start.exception() is not None:
                raise start.exception()  # type: ignore[misc]
            if not start.done():  # the lock went during recovery
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
            else:
                broken = asyncio.ensure_future(self.runner.broken.wait())
                try:
                    await asyncio.wait({watch, broken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    broken.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("runner could not start; retrying", extra={"error": str(exc)})
            health.down(RUNNER, exc)
            await self._step_down()
            await asyncio.sleep(delay)
            return min(delay * 2, 30.0)
        finally:
            # Cancelled (shutdown) while waiting: asyncio.wait does not cancel what it waits on,
            # and a recovery left running would submit jobs after the lock is released.
            watch.cancel()
            if not start.done():
                start.cancel()
            await asyncio.gather(watch, start, return_exceptions=True)
        why = watch.result() if watch.done() and not watch.cancelled() else "the runner lost the database"
        log.error("runner stopped: leadership lost or database gone; re-taking it", extra={"reason": why})
        health.down(RUNNER, why)
        await self._step_down()
        # Give another replica the first chance at the lock: it may be the one that can reach
        # the database (and a replica whose lock was taken from it should not grab it back).
        await asyncio.sleep(self.leader.retry)
        return self.leader.retry

    async def _step_down(self) -> None:
        if self.notify is not None:
            await self.notify.stop("stopped: this process no longer leads (leader lock or database lost)")
        await self.runner.stop()
        self.is_leader = False
        await self.leader.release()

    async def close(self) -> None:
        if self.runtime.config is not None:
            self.runtime.config.off_change(self.on_config_change)
        for task in list(self._tasks):
            task.cancel()
        await self.scheduler.stop()
        if self._leader_task is not None:
            self._leader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leader_task
        if self.notify is not None:
            await self.notify.close()
        await self.runner.stop()
        await self.leader.release()
        self.runtime.health.forget(RUNNER)
        self.runtime.health.forget("scheduler")
        self.bigquery.close()
        if self.stack is not None and self.owns_stack:
            await self.stack.stop()


@dataclass
class _Connection:
    client: Any
    storage: Any
    signer: Any
    project: str
    bucket: str
    location: str | None
    target: str
    stack: localstack.LocalStack | None


def _source_database(runtime: Any):
    """name -> (the database's section, its password) for the importer; None when unknown."""

    def find(name: str) -> tuple[Any, str | None] | None:
        config = runtime.config
        section = config.database(name) if config is not None else None
        if section is None:
            return None
        return section, config.secret("databases", "password", name=name)

    return find


def _server_wait(settings: Any, target: str) -> bool:
    """Server-side waits for Google; polling for local-bigquery, which answers them late when busy
    (docs/benchmarks.md)."""
    if settings.job_wait != "auto":
        return settings.job_wait == "server"
    return target != "local"


async def _connect(runtime: Runtime, stack: localstack.LocalStack | None) -> _Connection:
    """Clients for where BigQuery is now: the live configuration's project and service account
    when both are set, else the ``--google-project`` setting, else the local stack."""
    settings = runtime.settings
    config = runtime.config
    section = config.get("bigquery") if config is not None else None
    key = config.secret("bigquery", "service_account_json") if section is not None else None
    if section is not None and section.project and key:
        client, gcs, signer = google.clients_from_info(
            json.loads(key), section.project, section.location,
            bigquery_endpoint=settings.bigquery_endpoint, storage_endpoint=settings.storage_endpoint)
        return _Connection(client, gcs, signer, section.project, section.bucket or settings.gcs_bucket,
                           section.location, f"google:{section.project}", stack)
    if settings.google_project is not None:
        client, gcs, signer = google.clients(
            settings.google_project, settings.google_credentials_file, settings.bigquery_location
        )
        return _Connection(client, gcs, signer, settings.google_project, settings.gcs_bucket,
                           settings.bigquery_location, f"google:{settings.google_project}", stack)
    if stack is None:
        stack = await localstack.start_local_stack(
            settings.data_dir / "localstack", project=settings.project,
            venv=settings.localbq_venv, fake_gcs_server=settings.fake_gcs_server,
        )
    gcs = localstack.storage_client(stack)
    await asyncio.to_thread(google.ensure_bucket, gcs, settings.gcs_bucket)
    return _Connection(localstack.bigquery_client(stack), gcs, google.local_signer(settings.data_dir, settings.project),
                       settings.project, settings.gcs_bucket, None, "local", stack)


async def start_services(runtime: Runtime, *, stack: localstack.LocalStack | None = None) -> Services:
    """Connect BigQuery and start the scheduler and the runner election. ``stack`` given: use
    that local stack and leave it running on close (tests share one)."""
    settings = runtime.settings
    malloc.return_large_blocks()  # imports' megabyte buffers: back to the system when freed
    conn = await _connect(runtime, stack)
    owns_stack = conn.stack is not None and stack is None
    # Threads for the blocking client calls: enough for the jobs in flight, but never one per job
    # (workers may be large; a poll is a few milliseconds).
    jobs = BigQueryJobs(
        conn.client, location=conn.location, max_workers=min(settings.workers, 32),
        max_waits=min(settings.workers, 32),  # one server-side wait per job in flight, bounded
    )
    runtime.runs.project = conn.project
    services: Services

    async def files(uris: list[str], counts: list[int] | None = None) -> list[str]:
        # With the job's file counts: only the files this extract wrote, not an earlier attempt's.
        return await expand_extract_uris(services.storage, uris, file_counts=counts)

    runner = Runner(
        runtime.store, jobs, job_id_for,
        RunnerConfig(workers=settings.workers, bucket=conn.bucket, job_timeout=settings.job_timeout,
                     server_wait=_server_wait(settings, conn.target),
                     external_wait_override=settings.external_wait_override),
        extract_files=files,
        ensure_dataset=jobs.ensure_dataset,
        health=runtime.health,
        imports=ImportContext(storage=lambda: services.storage, database=_source_database(runtime)),
    )
    scheduler = Scheduler(runtime.runs, tick=settings.scheduler_tick, health=runtime.health)
    services = Services(
        runtime, jobs, conn.storage, conn.signer, conn.stack, owns_stack, runner, scheduler,
        LeaderLock(runtime.dsn, RUNNER_LOCK, check=settings.leader_check), target=conn.target,
    )
    if runtime.config_service is not None:
        services.notify = build_notify(
            runtime.store, runtime.health, runtime.config_service.box, settings,
            storage=lambda: (services.storage, services.signer),
            schema=lambda table: table_schema(services.bigquery.client, table),
            exports=ExportContext(
                config=lambda: runtime.config, bigquery=lambda: services.bigquery.client,
                storage=lambda: services.storage, policy=ExportPolicy.from_settings(settings),
                limits=ExportLimits.from_settings(settings), sheets_endpoint=settings.sheets_endpoint),
            config=runtime.config,
        )
        # The catalog's repository (docs/git.md): a reactor like the others, on the leader only.
        services.notify.host.add(GitReactor(GitSync(runtime.store, runtime.catalog, runtime.config, settings.data_dir)))
    runtime.bigquery = jobs
    runtime.services = services
    if runtime.config is not None:
        runtime.config.on_change(services.on_config_change)
    scheduler.start()
    services._leader_task = asyncio.get_running_loop().create_task(services._lead(), name="runner-leader")
    return services

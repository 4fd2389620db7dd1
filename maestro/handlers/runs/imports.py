"""Import tables in runs: read the source into Parquet in Cloud Storage, load it, exactly once.

An import job is one node of a run. Its phases are events on its own stream (see
maestro.events.imports), so a restart at any instant resumes where the log says it was:

1. **Its turn.** Imports of one table run one at a time, in the order they were planned (an
   incremental import reads from where the previous one's load ended).
2. **Read.** One snapshot of the source (``REPEATABLE READ READ ONLY``): the columns are discovered
   and compared with what the table was loaded with (``on_schema_change``), ``ImportStarted``
   records the window, and the rows stream into one new Parquet object
   (maestro.adapters.parquet_sink; never written over, never finalized half-written).
   ``ImportUploaded`` records the object's generation and the watermark *candidate*.
   A read that a crash interrupted is not trusted: its object, if any, is deleted and the read
   starts again in a new snapshot (nothing of it was loaded, so nothing is lost or doubled).
3. **Load.** One BigQuery load job with an explicit schema and the deterministic id
   ``<import job id>_load``, planned as an event before it is submitted and adopted on 409 like
   any job (maestro.handlers.runs.executor). **The watermark advances only in that load's
   ``JobSucceeded``** — never before, so a failed or lost load leaves it where it was.
4. **Clean up.** The object is deleted at the generation loaded (``LoadSourceDeleted``), then the
   import ends (``JobSucceeded`` with the rows loaded, or ``JobFailed`` with the reason).

Incremental windows (docs/imports.md, "Incremental imports"):

- **PostgreSQL** reads rows above the watermark, and rows at or below it (down to a floor) whose
  inserting transaction the previous import's snapshot did not see (``pg_visible_in_snapshot``):
  a transaction that took its id before the previous read and committed after it is read now,
  not skipped forever. The floor rises to an earlier import's watermark once every transaction
  that could still write below it has ended (``pg_snapshot_xmin`` of a later snapshot).
- **MySQL** has no such horizon: the importer notes the column's greatest value, waits
  ``settle_seconds`` for transactions in flight to commit, then reads ``>=`` the watermark up to
  that value in a new snapshot, dropping the rows at the watermark it loaded before
  (fingerprints of those rows travel in the watermark).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import hashlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import pyarrow as pa
import pymysql
import pyarrow.compute as pc

from maestro.adapters.gcs import delete_generation, stat_object
from maestro.adapters.parquet_sink import ParquetSettings, write_parquet
from maestro.adapters.sources import mysql as mysql_source
from maestro.adapters.sources import postgres as pg_source
from maestro.adapters.sources.columns import Column, SourceSchema
from maestro.catalog.import_query import ImportQuery, Incremental, parse_import_query
from maestro.errors import ConcurrencyConflict, MaestroError, ObjectExists, SourceColumnError, database_unavailable
from maestro.events.imports import (
    import_stream,
    ImportProgress,
    ImportSchemaChanged,
    ImportStarted,
    ImportUploaded,
)
from maestro.events.runs import (
    ImportSpec,
    JobCancelled,
    JobConfig,
    JobFailed,
    JobPlanned,
    JobStatistics,
    JobSucceeded,
    LoadField,
    Watermark,
)
from maestro.events.store import ANY_VERSION, NO_STREAM
from maestro.handlers.runs.executor import Outcome
from maestro.handlers.runs.loads import delete_sources

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger(__name__)
PROGRESS_EVERY = 2.0  # seconds between ImportProgress events while rows stream
TURN_POLL = 1.0  # seconds between looks at whether an earlier import of the table has ended
MAX_OPEN_SNAPSHOTS = 1000
CONFIRM_WAIT = 300.0  # seconds to wait for a load given up on to stop, before recording it failed  # PostgreSQL: earlier snapshots kept while their transactions may run


@dataclass
class ImportContext:
    storage: Callable[[], Any]  # the google.cloud.storage Client in use now
    database: Callable[[str], Any]  # name -> (DatabaseSection, password) or None
    # 32 MiB upload requests (the sink's default is 8): fewer, larger requests per file; on the
    # local GCS, whose resumable uploads slow as the object grows, 5 M rows went from 0.37x to
    # 0.48x of a bare COPY (docs/benchmarks.md). Memory: one such buffer per import in flight.
    parquet: ParquetSettings = ParquetSettings(chunk_size=32 * 1024 * 1024)
    connect_timeout: float = 10.0
    statement_timeout: float = 6 * 3600.0
    progress_every: float = PROGRESS_EVERY


class _Failed(Exception):
    def __init__(self, reason: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.retryable = reason, message, retryable


class _Cancelled(Exception):
    pass


class _MaestroDown(Exception):
    """Maestro's own database went away under the import (its ``__cause__``): not the source's
    failure, so not the import's either."""


def load_job_id(import_job_id: str, attempt: int = 1) -> str:
    """The BigQuery job id of an import's load (``attempt`` > 1: a load tried again)."""
    return f"{import_job_id}_load" if attempt == 1 else f"{import_job_id}_load{attempt}"


async def run_import(
    runner: Runner, job_id: str, run_id: str | None, table_id: str, config: JobConfig, *,
    cancelled: Callable[[], bool],
) -> Outcome:
    """Drive one import job to its end (resuming from its events); never raises but to stop."""
    try:
        return await _Import(runner, job_id, run_id, table_id, config, cancelled).drive()
    except asyncio.CancelledError:
        raise
    except _MaestroDown as exc:  # Maestro's own database: the runner restarts from the log
        raise exc.__cause__ from None
    except _Cancelled:
        return Outcome("cancelled", reason="cancelled", message="the run was cancelled during the import")
    except Exception as exc:
        if cancelled() and not isinstance(exc, _MaestroDown):  # the source connection was dropped for it
            return Outcome("cancelled", reason="cancelled", message="the run was cancelled during the import")
        return _failed(job_id, exc)


def _failed(job_id: str, exc: Exception) -> Outcome:
    """The outcome of an import that raised ``exc``."""
    try:
        raise exc
    except _Failed as exc:
        return Outcome("failed", reason=exc.reason, message=exc.message, retryable=exc.retryable)
    except MaestroError as exc:
        log.warning("import failed", extra={"job_id": job_id, "error": exc.message})
        return Outcome("failed", reason=exc.code, message=exc.message,
                       retryable=bool(getattr(exc, "retryable", False)))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
            pymysql.err.MySQLError) as exc:
        # A driver error from the *source* (Maestro's own database errors arrive as _MaestroDown):
        # a lost or refused connection passes with time, anything else is the source's answer.
        transient = database_unavailable(exc) or isinstance(exc, pymysql.err.OperationalError)
        log.warning("import failed at the source", extra={"job_id": job_id, "error": str(exc)})
        return Outcome("failed", reason="source_unavailable" if transient else "source_read_failed",
                       message=f"the source database: {type(exc).__name__}: {exc}", retryable=transient)
    except Exception as exc:
        log.exception("import failed", extra={"job_id": job_id})
        return Outcome("failed", reason="internal", message=f"{type(exc).__name__}: {exc}")


class _Import:
    def __init__(self, runner: Runner, job_id: str, run_id: str | None, table_id: str,
                 config: JobConfig, cancelled: Callable[[], bool]) -> None:
        assert config.import_spec is not None
        self.runner, self.job_id, self.run_id, self.table_id = runner, job_id, run_id, table_id
        self.config, self.spec, self.cancelled = config, config.import_spec, cancelled
        self.stream = f"job-{job_id}"
        self.load_id = load_job_id(job_id)
        if runner.imports is None:
            raise _Failed("not_configured", "this runner has no import sources configured")
        self.ctx = runner.imports

    async def _append(self, event: Any, expected: int = ANY_VERSION, stream: str | None = None, **kw: Any) -> None:
        await self._db(lambda: self.runner._append(stream or self.stream, expected, event, **kw))

    async def _db(self, call: Callable[[], Any]) -> Any:
        """A call on Maestro's database (through its blips); its loss is told apart from the source's."""
        try:
            return await self.runner._db(call)
        except Exception as exc:
            if database_unavailable(exc):
                raise _MaestroDown() from exc
            raise

    async def drive(self) -> Outcome:
        recorded = await self._db(lambda: self.runner.store.read(self.stream))
        uploaded = next((r.event for r in reversed(recorded) if isinstance(r.event, ImportUploaded)), None)
        started = [r.event for r in recorded if isinstance(r.event, ImportStarted)]
        if uploaded is None:
            await self._wait_turn()
            if started:  # a read a crash interrupted: whatever it wrote is not trusted
                await self._discard(started[-1].uri)
            uploaded = await self._read(len(started) + 1)
        load = await self._load(uploaded)
        return load

    # ------------------------------------------------------------------ turn
    async def _wait_turn(self) -> None:
        """Until no import of this table planned before this one is unfinished."""
        while True:
            earlier = await self._db(lambda: self.runner.pool.fetchval(
                "SELECT count(*) FROM jobs j, jobs me WHERE me.job_id = $2 AND j.table_id = $1 "
                "AND j.kind = 'import' AND j.state IN ('planned', 'submitted') AND j.job_id <> $2 "
                "AND (j.planned_at, j.job_id) < (me.planned_at, me.job_id)",
                self.table_id, self.job_id,
            ))
            if not earlier:
                return
            if self.cancelled():
                raise _Cancelled()
            await asyncio.sleep(TURN_POLL)

    # ------------------------------------------------------------------ read
    async def _read(self, read: int) -> ImportUploaded:
        found = self.ctx.database(self.spec.source_database)
        if found is None or found[0] is None:
            raise _Failed("source_unknown", f"no source database {self.spec.source_database!r} is registered "
                          "(/api/v1/databases)")
        section, password = found
        dialect = section.driver
        query = parse_import_query(self.spec.query, dialect, table=self.spec.table)
        if self.spec.id_column and query.limit is not None:
            raise _Failed("import_query_refused", "an incremental import reads every new row: its query "
                          "takes no LIMIT")
        previous = await self._previous()
        opener = pg_source.open_source if dialect == "postgres" else mysql_source.open_source
        kwargs = {"connect_timeout": self.ctx.connect_timeout, "statement_timeout": self.ctx.statement_timeout}
        upper = None
        if dialect == "mysql" and self.spec.id_column:
            # No snapshot horizon: note the greatest value now, give the transactions in flight
            # settle_seconds to commit, then read up to it in a snapshot taken after.
            async with opener(section.dsn, password, **kwargs) as source, self._abort_on_cancel(source):
                schema = await source.discover(query)
                upper = await source.fetchval(*_max_query(query, _column(schema, self.spec.id_column), dialect))
            await self._sleep(self.spec.settle_seconds)
        async with opener(section.dsn, password, **kwargs) as source, self._abort_on_cancel(source):
            schema = await source.discover(query)
            fields = [LoadField(**f) for f in schema.bigquery()]
            full, reason, additions = await self._decide(previous, fields)
            plan = await _Window.plan(self.spec, query, schema, source, dialect, previous, full, upper)
            uri = (f"gs://{self.runner.config.bucket}/imports/{_destination_path(self.config)}/"
                   f"{self.job_id}-{read}.parquet")
            await self._append(ImportStarted(
                job_id=self.job_id, run_id=self.run_id, table_id=self.table_id, read=read, uri=uri,
                full=full, reason=reason, window=plan.describe(), fields=fields,
            ))
            began = time.monotonic()
            batches = source.read(query, schema, incremental=plan.incremental)
            try:
                obj = await write_parquet(
                    self.ctx.storage(), uri, schema.arrow, self._watch(plan.filter(batches)), self.ctx.parquet,
                )
            except BaseException:
                with contextlib.suppress(Exception):  # finalized, then found wrong (size, CRC)
                    await self._discard(uri)
                raise
            try:
                watermark = await plan.next(source, fields)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._discard(uri)
                raise
        uploaded = ImportUploaded(
            job_id=self.job_id, run_id=self.run_id, table_id=self.table_id, uri=obj.uri,
            generation=obj.generation, rows=obj.rows, bytes=obj.size, row_groups=obj.row_groups,
            seconds=round(time.monotonic() - began, 3), watermark=watermark,
        )
        self._plan = (full, additions, watermark, fields)
        await self._append(uploaded)  # lost with the database: the resumed read discards the object
        return uploaded

    @contextlib.asynccontextmanager
    async def _abort_on_cancel(self, source: Any) -> AsyncIterator[None]:
        """A run cancelled while a source statement runs (a MAX, a selective scan, the COPY
        itself) drops the source connection at once instead of waiting for the statement."""

        async def watch() -> None:
            while not self.cancelled():
                await asyncio.sleep(0.5)
            source.abort()

        task = asyncio.get_running_loop().create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.cancelled():
                raise _Cancelled()
            await asyncio.sleep(min(left, 0.5))

    async def _previous(self) -> _Previous:
        """The table's last successful import load (its watermark) and any re-import request since."""
        row = await self._db(lambda: self.runner.pool.fetchrow(
            "SELECT l.config->'watermark' AS watermark, i.planned_at FROM jobs l JOIN jobs i "
            "ON i.job_id = l.config->>'import_job_id' WHERE l.table_id = $1 AND l.kind = 'load' "
            "AND l.state = 'succeeded' ORDER BY l.finished_at DESC LIMIT 1",
            self.table_id,
        ))
        requested = await self._db(lambda: self.runner.pool.fetchrow(
            "SELECT occurred_at, data->>'reason' AS reason FROM events WHERE stream_id = $1 "
            "AND type = 'ReimportRequested' ORDER BY version DESC LIMIT 1",
            import_stream(self.table_id),
        ))
        watermark = None
        stored = orjson.loads(row["watermark"]) if row is not None and row["watermark"] else None
        if stored is not None:  # JSON null: the last import was a full one of a full-mode table
            watermark = Watermark.model_validate(stored)
        request = None
        if requested is not None and (row is None or requested["occurred_at"] > row["planned_at"]):
            request = requested["reason"] or "a re-import was requested"
        return _Previous(loaded=row is not None, watermark=watermark, request=request)

    async def _decide(self, previous: _Previous, fields: list[LoadField]) -> tuple[bool, str, bool]:
        """(full, why, new columns to add) for this import."""
        if not self.spec.id_column:
            return True, "a full import", False
        wm = previous.watermark
        if self.spec.reimport:
            return True, self.spec.reimport_reason or "a reimport condition holds", False
        if previous.request:
            return True, f"re-import requested: {previous.request}", False
        if wm is None or wm.value is None:
            return True, "the first import" if wm is None else "no value of the column loaded yet", False
        if wm.column != self.spec.id_column:
            return True, f"the incremental column changed from {wm.column} to {self.spec.id_column}", False
        before = {f.name: f.type for f in wm.fields}
        now = {f.name: f.type for f in fields}
        added = [n for n in now if n not in before]
        removed = [n for n in before if n not in now]
        changed = [f"{n}: {before[n]} -> {now[n]}" for n in now if n in before and before[n] != now[n]]
        if not (added or removed or changed):
            return False, "", False
        policy = self.spec.on_schema_change
        action = policy
        if policy == "add_columns" and (removed or changed):
            action = "fail"
        await self._append(ImportSchemaChanged(
            job_id=self.job_id, run_id=self.run_id, table_id=self.table_id, added=added, removed=removed,
            changed=changed, action=action,  # type: ignore[arg-type]
        ))
        what = "; ".join(filter(None, [
            f"added {', '.join(added)}" if added else "", f"removed {', '.join(removed)}" if removed else "",
            f"changed {', '.join(changed)}" if changed else "",
        ]))
        if action == "reimport":
            return True, f"the source's columns changed ({what})", False
        if action == "fail":
            hint = ("; only added columns can be appended: set on_schema_change to reimport, or "
                    "POST /api/v1/tables/{id}/reimport" if policy == "add_columns" else "")
            raise _Failed("schema_changed", f"the source's columns changed ({what}){hint}")
        return False, "", True

    async def _discard(self, uri: str) -> None:
        stat = await stat_object(self.ctx.storage(), uri)
        if stat is not None:
            with contextlib.suppress(ObjectExists):
                await delete_generation(self.ctx.storage(), uri, stat.generation)

    async def _watch(self, batches: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
        """The batches, with progress events and the run's cancel checked between them."""
        rows = size = 0
        last = time.monotonic()
        async for batch in batches:
            if self.cancelled():
                raise _Cancelled()
            rows, size = rows + batch.num_rows, size + batch.nbytes
            if time.monotonic() - last >= self.ctx.progress_every:
                last = time.monotonic()
                await self._append(ImportProgress(
                    job_id=self.job_id, run_id=self.run_id, table_id=self.table_id, rows=rows, bytes=size,
                ))
            yield batch

    # ------------------------------------------------------------------ load
    async def _load(self, uploaded: ImportUploaded) -> Outcome:
        """Load the uploaded object; a load failing retryably is tried again (a new load job of
        the same file, up to the table's max_attempts), never the whole read."""
        runner = self.runner
        config = await self._load_config(uploaded)
        attempt = max(1, await self._db(lambda: runner.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE config->>'import_job_id' = $1", self.job_id)))
        while True:
            self.load_id = load_job_id(self.job_id, attempt)
            outcome = await self._one_load(config)
            if (outcome.status != "failed" or not outcome.retryable or self.cancelled()
                    or attempt >= self.config.max_attempts):
                break
            log.warning("import load failed; loading again", extra={"job_id": self.load_id, "error": outcome.message})
            await asyncio.sleep(runner.config.retry_delay * attempt)
            attempt += 1
        await self._clean(config)
        if outcome.status == "succeeded":
            stats = outcome.statistics or JobStatistics()
            return Outcome("succeeded", stats.model_copy(update={"input_file_bytes": uploaded.bytes}))
        if outcome.status == "cancelled":
            return Outcome("cancelled", reason="cancelled", message="the run was cancelled during the load")
        return Outcome("failed", outcome.statistics, reason=outcome.reason or "load_failed",
                       message=f"the load failed: {outcome.message}", retryable=outcome.retryable)

    async def _one_load(self, config: JobConfig) -> Outcome:
        """One load job ``self.load_id``: planned (or found planned), executed or re-attached,
        its outcome recorded once."""
        runner = self.runner
        owner = await self._db(lambda: runner.pool.fetchrow(
            "SELECT owner_id, group_id, attempt FROM jobs WHERE job_id = $1", self.job_id))
        try:
            await self._append(stream=f"job-{self.load_id}", expected=NO_STREAM, event=JobPlanned(
                job_id=self.load_id, run_id=self.run_id, table_id=self.table_id, config=config,
                attempt=owner["attempt"] if owner else 1, owner_id=owner["owner_id"] if owner else None,
                group_id=owner["group_id"] if owner else None,
            ))
            row = None
        except ConcurrencyConflict:
            row = await self._db(lambda: runner.pool.fetchrow(
                "SELECT state, config::text, error, reason, retryable, statistics::text, planned_at, "
                "submitted_at FROM jobs WHERE job_id = $1", self.load_id))
            config = JobConfig.model_validate_json(row["config"])
        if row is not None and row["state"] in ("succeeded", "failed", "cancelled"):
            stats = JobStatistics.model_validate_json(row["statistics"]) if row["statistics"] else None
            return Outcome(row["state"], stats, reason=row["reason"] or "", message=row["error"] or "",
                           retryable=bool(row["retryable"]))
        if row is not None:
            runner.executor.unattached += 1  # looked up before anything is inserted again
        try:
            outcome = await runner.executor.execute(
                self.load_id, self.run_id, config, submitted=row is not None and row["state"] == "submitted",
                recovered=row is not None, cancelled=self.cancelled,
                planned_at=row["planned_at"].timestamp() if row is not None else None,
                submitted_at=row["submitted_at"].timestamp() if row is not None and row["submitted_at"] else None,
            )
        except Exception as exc:  # recording JobSubmitted lost Maestro's database
            if database_unavailable(exc):
                raise _MaestroDown() from exc
            raise
        if outcome.status != "succeeded":
            outcome = await self._confirm(config, outcome)
        await self._record_load(config, outcome)
        return outcome

    async def _confirm(self, config: JobConfig, outcome: Outcome) -> Outcome:
        """A load given up on (timed out, cancelled, BigQuery unreachable) may still commit: an
        append recorded as failed would then be read and appended again. Ask BigQuery how it
        ended (waiting up to CONFIRM_WAIT for it to stop) and record that."""
        jobs = self.runner.jobs
        deadline = time.monotonic() + CONFIRM_WAIT
        while True:
            try:
                state = await jobs.get(self.load_id, project=config.project)
            except Exception as exc:
                state, error = None, exc
            else:
                error = None
                if state is None:  # BigQuery never saw it: nothing was loaded
                    return outcome
                if state.state == "DONE":
                    if state.error is None:
                        log.warning("an import load given up on had succeeded", extra={"job_id": self.load_id})
                        return Outcome("succeeded", state.statistics)
                    return outcome
            if time.monotonic() >= deadline:
                log.error("an import load's end is unknown; recorded as failed", extra={
                    "job_id": self.load_id, "error": str(error) if error else "still running"})
                return outcome
            await asyncio.sleep(2.0)

    async def _load_config(self, uploaded: ImportUploaded) -> JobConfig:
        plan = getattr(self, "_plan", None)
        if plan is None:  # resumed after ImportUploaded: the plan is in the log
            recorded = await self._db(lambda: self.runner.store.read(self.stream))
            started = next(r.event for r in reversed(recorded) if isinstance(r.event, ImportStarted))
            changed = [r.event for r in recorded if isinstance(r.event, ImportSchemaChanged)]
            additions = bool(changed) and changed[-1].action == "add_columns"
            plan = (started.full, additions, uploaded.watermark, started.fields)
        full, additions, watermark, fields = plan
        base = self.config
        return JobConfig(
            kind="load", project=base.project, destination=base.destination,
            write_disposition="WRITE_TRUNCATE" if full or not self.spec.id_column else "WRITE_APPEND",
            partitioning=base.partitioning, clustering=base.clustering, labels=base.labels,
            source_uris=[uploaded.uri], source_format="PARQUET", load_schema=fields,
            schema_update_options=["ALLOW_FIELD_ADDITION"] if additions else [],
            delete_source=True, source_generations=[uploaded.generation], import_job_id=self.job_id,
            watermark=watermark, max_attempts=1,
        )

    async def _record_load(self, config: JobConfig, outcome: Outcome) -> None:
        stream = f"job-{self.load_id}"
        common = {"job_id": self.load_id, "run_id": self.run_id, "table_id": self.table_id}
        if outcome.status == "succeeded":
            event: Any = JobSucceeded(**common, statistics=outcome.statistics or JobStatistics(),
                                      watermark=config.watermark)
        elif outcome.status == "cancelled" or self.cancelled():
            event = JobCancelled(**common, statistics=outcome.statistics)
        else:
            event = JobFailed(**common, reason=outcome.reason, message=outcome.message,
                              retryable=outcome.retryable, statistics=outcome.statistics)
        await self._append(event, ANY_VERSION, stream=stream, once=True)

    async def _clean(self, config: JobConfig) -> None:
        """Delete the loaded object at its generation, once (also after a crash right before)."""
        await self._db(lambda: delete_sources(self.runner, self.load_id, self.table_id, config))


@dataclass(frozen=True)
class _Previous:
    loaded: bool
    watermark: Watermark | None
    request: str | None


def _destination_path(config: JobConfig) -> str:
    dataset, name = config.destination.split(".")[-2:]
    return f"{dataset}/{name}"


def _column(schema: SourceSchema, name: str) -> Column:
    for c in schema.columns:
        if c.source.lower() == name.lower() or c.name.lower() == name.lower():
            return c
    raise SourceColumnError(
        f"the incremental column {name!r} is not among the columns the import query selects", column=name
    )


def _max_query(query: ImportQuery, column: Column, dialect: str) -> tuple[Any, ...]:
    """The column's greatest value, as text, over the query's rows (its WHERE applies)."""
    quoted = query.quote(column.source)
    expr = f"max({quoted})::text" if dialect == "postgres" else f"CAST(max({quoted}) AS CHAR)"
    rendered = query.render(None, select=[expr])
    return (rendered.sql, *rendered.params) if dialect == "postgres" else (rendered.sql, rendered.params)


def _snapshot_bounds(snapshot: str) -> tuple[int, int]:
    xmin, xmax, _ = snapshot.split(":")
    return int(xmin), int(xmax)


def fingerprint(row: dict[str, Any], names: list[str]) -> str:
    """A row's identity for de-duplicating the MySQL boundary: its values of ``names`` (the columns
    loaded when the fingerprint was taken, so an added column does not change it)."""
    return hashlib.sha256(orjson.dumps([row.get(n) for n in names], default=_plain)).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if isinstance(value, (decimal.Decimal, dt.date, dt.time, dt.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


class _Window:
    """What one import reads and the watermark its load will record."""

    def __init__(self, spec: ImportSpec, query: ImportQuery, schema: SourceSchema, dialect: str,
                 previous: _Previous, full: bool) -> None:
        self.spec, self.query, self.schema, self.dialect = spec, query, schema, dialect
        self.previous, self.full = previous, full
        self.incremental: Incremental | None = None
        self.snapshot: str | None = None
        self.upper: Any = None
        self.column: Column | None = None
        self.boundary_rows: list[str] = []  # MySQL: fingerprints of the rows read at ``upper``
        self._boundary_value: pa.Scalar | None = None
        self._drop: Counter[str] = Counter()
        self._old_value: pa.Scalar | None = None
        self.nothing = False  # MySQL: the column had no value when looked at; read no row
        self._drop_fields: list[str] = []  # the columns the old boundary's fingerprints cover

    @classmethod
    async def plan(cls, spec: ImportSpec, query: ImportQuery, schema: SourceSchema, source: Any,
                   dialect: str, previous: _Previous, full: bool, upper: Any) -> _Window:
        w = cls(spec, query, schema, dialect, previous, full)
        if not spec.id_column:
            return w
        w.column = column = _column(schema, spec.id_column)
        wm = None if full else previous.watermark
        if dialect == "postgres":
            kind = await source.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)",
                                         query.quoted_table)
            if kind not in ("r", "p"):
                what = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}.get(kind or "", "not a table")
                raise _Failed("source_not_a_table", (
                    f"{query.quoted_table} is {what}: an incremental import from PostgreSQL reads a table "
                    "(it asks each row's inserting transaction, which only a table's rows carry); import "
                    "the table itself, or import this one in full (no id_column)"))
            w.snapshot = await source.fetchval("SELECT pg_current_snapshot()::text")
            if wm is not None:
                _, horizon = _snapshot_bounds(w.snapshot)
                w.incremental = Incremental(
                    column.source, after=wm.value, column_type=column.source_type, floor=wm.floor,
                    unseen_in=wm.snapshot, xid_horizon=horizon,
                )
            return w
        if upper is None:
            if not full:  # nothing there when the importer looked: nothing settles this time
                w._read_nothing(column, wm)
            return w  # a full import with no value yet: every row, and the next import full too
        if wm is not None and wm.value is not None:
            w._old_value = _scalar(column, wm.value)
            if pc.less(_scalar(column, upper), w._old_value).as_py():
                w._read_nothing(column, wm)  # rows at the watermark went away: it stays where it is
                return w
        w.upper = upper
        w.incremental = Incremental(
            column.source, after=_bound(column, wm.value) if wm is not None else None, inclusive=True,
            up_to=_bound(column, upper), or_null=full,
        )
        w._boundary_value = _scalar(column, upper)
        if wm is not None and wm.value is not None and wm.boundary:
            w._drop = Counter(wm.boundary)
            w._drop_fields = [f.name for f in wm.fields]
        return w

    def _read_nothing(self, column: Column, wm: Watermark | None) -> None:
        """An empty window (``col > v AND col <= v``): the source is asked for no row."""
        self.nothing = True
        if wm is not None and wm.value is not None:
            value = _bound(column, wm.value)
            self.incremental = Incremental(column.source, after=value, up_to=value)

    def describe(self) -> dict[str, Any]:
        inc = self.incremental
        out: dict[str, Any] = {"column": self.spec.id_column}
        if inc is not None:
            out.update(after=inc.after, inclusive=inc.inclusive, up_to=inc.up_to, floor=inc.floor,
                       unseen_in=inc.unseen_in)
        if self.snapshot:
            out["snapshot"] = self.snapshot
        return out

    async def filter(self, batches: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
        """MySQL: drop the rows at the old watermark loaded before; note the rows at the new one."""
        if self.dialect != "mysql" or self.column is None:
            async for batch in batches:
                yield batch
            return
        if self.nothing:
            async for batch in batches:
                yield batch.slice(0, 0)
            return
        index = self.schema.arrow.get_field_index(self.column.name)
        async for batch in batches:
            values = batch.column(index)
            if self._old_value is not None and self._drop:
                at_old = pc.fill_null(pc.equal(values, self._old_value), False)
                if pc.any(at_old).as_py():
                    keep = [True] * batch.num_rows
                    rows = batch.to_pylist()
                    for i in pc.indices_nonzero(at_old).to_pylist():
                        fp = fingerprint(rows[i], self._drop_fields)
                        if self._drop[fp] > 0:
                            self._drop[fp] -= 1
                            keep[i] = False
                    batch = batch.filter(pa.array(keep))
                    values = batch.column(index)
            if self._boundary_value is not None:
                at_new = pc.fill_null(pc.equal(values, self._boundary_value), False)
                if pc.any(at_new).as_py():
                    rows = batch.filter(at_new).to_pylist()
                    self.boundary_rows.extend(fingerprint(r, self.schema.arrow.names) for r in rows)
            yield batch

    async def next(self, source: Any, fields: list[LoadField]) -> Watermark | None:
        """The watermark this import's load records when it succeeds."""
        if not self.spec.id_column or self.column is None:
            return None
        wm = None if self.full else self.previous.watermark
        if self.dialect == "postgres":
            value = await source.fetchval(*_max_query(self.query, self.column, "postgres"))
            if value is None and wm is not None:
                value = wm.value
            opened = [*(wm.open_snapshots if wm else []), (value, self.snapshot)]
            floor = wm.floor if wm else None
            xmin_now, _ = _snapshot_bounds(self.snapshot or "0:0:")
            close = None
            for i in range(len(opened) - 1):
                if xmin_now >= _snapshot_bounds(opened[i + 1][1])[1]:
                    close = i
            if close is not None:
                floor, opened = opened[close][0], opened[close:]
            if len(opened) > MAX_OPEN_SNAPSHOTS:
                floor, opened = opened[-MAX_OPEN_SNAPSHOTS - 1][0], opened[-MAX_OPEN_SNAPSHOTS:]
            return Watermark(column=self.spec.id_column, value=value, snapshot=self.snapshot, floor=floor,
                             open_snapshots=[tuple(o) for o in opened], fields=fields)
        if self.upper is None:
            value = wm.value if wm is not None else None
            return Watermark(column=self.spec.id_column, value=value,
                             boundary=list(wm.boundary) if wm else [], fields=fields)
        boundary = list(self.boundary_rows)
        if wm is not None and wm.value is not None and self._old_value is not None \
                and self._old_value.equals(self._boundary_value):
            boundary = list(wm.boundary) + boundary  # still at the same value: all rows loaded there
        return Watermark(column=self.spec.id_column, value=self.upper, boundary=boundary, fields=fields)


def _bound(column: Column, text: Any) -> Any:
    """A MySQL bound typed as its column (a string bound would compare numbers as doubles)."""
    if text is None:
        return None
    if column.bigquery == "INT64":
        return int(text)
    if column.bigquery in ("NUMERIC", "BIGNUMERIC"):
        return decimal.Decimal(str(text))
    return text


def _scalar(column: Column, text: Any) -> pa.Scalar:
    """A MySQL value (as its text) as the Arrow value the reader makes of it."""
    return mysql_source._column(column, (str(text),))[0]

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
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import pyarrow as pa
import pymysql

from maestro.adapters.gcs import delete_generation, stat_object
from maestro.adapters.parquet_sink import ParquetSettings, write_parquet
from maestro.adapters.sources import mysql as mysql_source
from maestro.adapters.sources import postgres as pg_source
from maestro.catalog.import_query import parse_import_query
from maestro.errors import MaestroError, ObjectExists, database_unavailable
from maestro.events.imports import ImportProgress, ImportSchemaChanged, ImportStarted, ImportUploaded, import_stream
from maestro.events.runs import JobConfig, LoadField, Watermark
from maestro.handlers.runs.executor import Outcome
from maestro.handlers.runs.import_load import ImportLoad, load_job_id
from maestro.handlers.runs.import_load import MaestroDown as _MaestroDown
from maestro.handlers.runs.import_window import ImportFailed as _Failed
from maestro.handlers.runs.import_window import Previous, Window, max_query, source_column

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger(__name__)
PROGRESS_EVERY = 2.0  # seconds between ImportProgress events while rows stream
TURN_POLL = 1.0  # seconds between looks at whether an earlier import of the table has ended


@dataclass
class ImportContext:
    storage: Callable[[], Any]  # the google.cloud.storage Client in use now
    database: Callable[[str], Any]  # name -> (DatabaseSection, password) or None
    # 16 MiB upload requests, sent from the sink's own thread while the next row group encodes.
    # 32 MiB were faster on the local GCS (whose resumable uploads slow as the object grows), but
    # a 1 M-row file (24 MB) never filled one while 5 M rows did: peak RSS differed by a chunk and
    # its copy (+40 %); 16 MiB: within 3 %; 8 MiB: +10 % and slower (docs/benchmarks.md).
    parquet: ParquetSettings = ParquetSettings(chunk_size=16 * 1024 * 1024)
    connect_timeout: float = 10.0
    statement_timeout: float = 6 * 3600.0
    progress_every: float = PROGRESS_EVERY


class _Cancelled(Exception):
    pass


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


class _Import(ImportLoad):
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
                upper = await source.fetchval(*max_query(query, source_column(schema, self.spec.id_column), dialect))
            await self._sleep(self.spec.settle_seconds)
        async with opener(section.dsn, password, **kwargs) as source, self._abort_on_cancel(source):
            schema = await source.discover(query)
            fields = [LoadField(**f) for f in schema.bigquery()]
            full, reason, additions = await self._decide(previous, fields)
            plan = await Window.plan(self.spec, query, schema, source, dialect, previous, full, upper)
            uri = (f"gs://{self.runner.config.bucket}/imports/{_destination_path(self.config)}/"
                   f"{self.job_id}-{read}.parquet")
            await self._append(ImportStarted(
                job_id=self.job_id, run_id=self.run_id, table_id=self.table_id, read=read, uri=uri,
                full=full, reason=reason, window=plan.describe(), fields=fields,
            ))
            began = time.monotonic()
            batches = source.read(query, schema, incremental=plan.incremental, **plan.read_options())
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

    async def _previous(self) -> Previous:
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
        return Previous(loaded=row is not None, watermark=watermark, request=request)

    async def _decide(self, previous: Previous, fields: list[LoadField]) -> tuple[bool, str, bool]:
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
        if wm.snapshot is not None and wm.seen is None:
            return True, "the watermark predates the record of loaded transactions (a full import once)", False
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

def _destination_path(config: JobConfig) -> str:
    dataset, name = config.destination.split(".")[-2:]
    return f"{dataset}/{name}"



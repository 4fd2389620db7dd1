"""Write an exported table into MySQL / MariaDB: staging, ``LOAD DATA LOCAL INFILE``, atomic rename.

MySQL commits every DDL statement on its own, so unlike PostgreSQL the export cannot be one
transaction. Instead each step is safe to repeat, and the staging table's name derives from the
export id, so an attempt after a crash finds and drops what the crashed one left:

1. ``CREATE TABLE`` the staging table (InnoDB, utf8mb4 with the binary collation: BigQuery
   compares strings exactly, and a case-insensitive key would merge rows it keeps apart).
2. Load it in spooled chunks: the load-format bytes are written to a temporary file of at most
   one protocol packet (under 16 MiB and ``max_allowed_packet``), cut at row ends, while the
   previous one is loaded (two on disk at most). ``LOAD DATA LOCAL``
   turns data errors into warnings (the server cannot stop the client's file half-way), so any
   warning after a chunk fails the export, naming MySQL's message.
3. replace: record the export in ``_maestro_exports`` as *loaded*, then
   ``RENAME TABLE target TO old, staging TO target`` — one atomic statement, so a reader sees the
   previous table or the new one, never neither — then drop the old one and record *done*. An
   attempt that finds *loaded* finishes the swap (the staging table is complete by then).
   upsert: ``INSERT … SELECT … ON DUPLICATE KEY UPDATE`` and the *done* record in one
   transaction, then drop the staging table.

An export recorded *done* is not written again (exactly once; docs/db-export.md). A failure
before the swap leaves the previous table as it was; :meth:`MySQLTarget.discard` drops the
staging table (the export handler calls it on a fresh connection after any failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql

from maestro.adapters.targets.common import (
    MARKER_DAYS, MARKER_TABLE, TargetTable, Written, no_key_message, retired_name, staging_name,
)
from maestro.adapters.targets.mysql_guard import LOCAL_FILES, GuardedConnection
from maestro.adapters.targets.types import ExportColumn, quote_mysql
from maestro.errors_outside import ExportFailed

SPOOL_BYTES = 16 * 1024 * 1024  # capped below by the server's max_allowed_packet (see _load)
_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO"
_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_LOST = {2006, 2013, 2055, 1927}  # server gone, lost connection, connection killed (MariaDB)
_UNAVAILABLE = {1040, 1053, 2002, 2003}
_RETRY = {1205, 1213}  # lock wait timeout, deadlock


@contextlib.asynccontextmanager
async def open_target(
    dsn: str, password: str | None = None, *, connect_timeout: float = 10.0,
    statement_timeout: float = 6 * 3600.0, spool_dir: Path | None = None,
) -> AsyncIterator[MySQLTarget]:
    """``dsn`` is ``mysql://user@host:3306/database`` (no password); the database is the target."""
    url = urlsplit(dsn)
    try:
        # aiomysql.connect() is this, with its own class: ours answers the server's LOCAL INFILE
        # requests only for the file being loaded (see GuardedConnection).
        conn = GuardedConnection(
            host=url.hostname or "127.0.0.1", port=url.port or 3306, user=unquote(url.username or "root"),
            password=password or "", db=unquote(url.path.lstrip("/")) or None, connect_timeout=connect_timeout,
            charset="utf8mb4", autocommit=True, client_flag=LOCAL_FILES,
        )
        await conn._connect()
    except (OSError, asyncio.TimeoutError, pymysql.err.MySQLError) as exc:
        raise ExportFailed("target_unavailable", f"cannot connect to the MySQL target: {type(exc).__name__}: {exc}",
                           retryable=True) from exc
    try:
        async with conn.cursor() as cur:
            mariadb = "mariadb" in conn.get_server_info().lower()
            limit = (f"max_statement_time = {statement_timeout:.3f}" if mariadb
                     else f"max_execution_time = {int(statement_timeout * 1000)}")
            await cur.execute(f"SET SESSION time_zone = '+00:00', sql_mode = '{_SQL_MODE}', {limit}")
        yield MySQLTarget(conn, spool_dir)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ensure_closed(), timeout=5)
        conn.close()


class _Cursor(aiomysql.Cursor):
    """Keeps a statement's warnings (aiomysql turns them into Python warnings): a load's warnings
    are its data errors, and the notes of ``DROP TABLE IF EXISTS`` are nothing to report."""

    diagnostics: list[tuple[Any, ...]] = []

    async def _show_warnings(self, conn: Any) -> None:
        if self._result and self._result.has_next:
            return
        self.diagnostics = list(await conn.show_warnings() or [])


class MySQLTarget:
    driver = "mysql"

    def __init__(self, conn: GuardedConnection, spool_dir: Path | None = None) -> None:
        self._conn = conn
        self._spool_dir = spool_dir

    def abort(self) -> None:
        self._conn.close()

    async def _sql(self, statement: str, params: tuple[Any, ...] | None = None) -> tuple[int, list[tuple[Any, ...]]]:
        count, rows, _ = await self._run(statement, params)
        return count, rows

    async def _run(
        self, statement: str, params: tuple[Any, ...] | None = None
    ) -> tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(affected rows, rows, the statement's warnings other than notes)."""
        async with self._conn.cursor(_Cursor) as cur:
            count = await cur.execute(statement, params)
            rows = list(await cur.fetchall() or [])
            return count, rows, [w for w in cur.diagnostics if str(w[0]).lower() != "note"]

    async def export(
        self, table: TargetTable, columns: Sequence[ExportColumn], chunks: AsyncIterable[bytes], *,
        export_id: str, mode: str = "replace",
    ) -> Written:
        """Write the rows ``chunks`` carry (load-format text) as ``table``; see the module doc."""
        try:
            return await self._export(table, columns, chunks, export_id, mode)
        except ExportFailed:
            raise
        except pymysql.err.MySQLError as exc:
            raise _translated(exc) from exc
        except (OSError, asyncio.TimeoutError) as exc:
            raise ExportFailed("connection_lost", f"the connection to the MySQL target was lost: "
                               f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except RuntimeError as exc:  # aiomysql: a LOCAL INFILE request while no file is being loaded
            self._conn.close()
            raise ExportFailed("target_refused", f"the MySQL target broke the protocol (refused, connection "
                               f"closed): {exc}", retryable=False) from exc

    async def discard(self, export_id: str) -> None:
        """Drop what an unfinished attempt of this export left (its staging table), unless the
        export is recorded *loaded*: then the staging table is the finished data the swap needs."""
        state = await self._state(export_id)
        if state is None:
            await self._sql(f"DROP TABLE IF EXISTS {quote_mysql(staging_name(export_id))}")

    async def _state(self, export_id: str) -> tuple[str, int] | None:
        _, rows = await self._sql(f"SELECT state, `rows` FROM {quote_mysql(MARKER_TABLE)} WHERE export_id = %s",
                                  (export_id,))
        return (rows[0][0], int(rows[0][1])) if rows else None

    async def _export(
        self, table: TargetTable, columns: Sequence[ExportColumn], chunks: AsyncIterable[bytes],
        export_id: str, mode: str,
    ) -> Written:
        lock = "maestro-export-" + hashlib.sha256(export_id.encode()).hexdigest()[:40]
        _, got = await self._sql("SELECT GET_LOCK(%s, 30)", (lock,))
        if not got or got[0][0] != 1:
            raise ExportFailed("conflict", "another process is writing this export", retryable=True)
        try:
            await self._sql(
                f"CREATE TABLE IF NOT EXISTS {quote_mysql(MARKER_TABLE)} (export_id VARCHAR(255) PRIMARY KEY, "
                "target_table VARCHAR(255) NOT NULL, `rows` BIGINT NOT NULL, state VARCHAR(16) NOT NULL, "
                f"finished_at DATETIME(6) NOT NULL) {_TABLE_OPTIONS}"
            )
            state = await self._state(export_id)
            if state is not None:
                if state[0] == "loaded":
                    await self._swap(table, export_id)
                with contextlib.suppress(pymysql.err.MySQLError):
                    await self._sql(f"DROP TABLE IF EXISTS {quote_mysql(staging_name(export_id))}")
                return Written(state[1], already_done=True)
            staging = quote_mysql(staging_name(export_id))
            await self._sql(f"DROP TABLE IF EXISTS {staging}, {quote_mysql(retired_name(export_id))}")
            await self._sql(f"CREATE TABLE {staging} ({_definition(columns)}) {_TABLE_OPTIONS}")
            rows = await self._load(staging, columns, chunks)
            if mode == "replace":
                await self._record(export_id, table, rows, "loaded")
                await self._swap(table, export_id)
            else:
                await self._upsert(table, columns, staging, export_id, rows)
                await self._sql(f"DROP TABLE IF EXISTS {staging}")
            await self._sql(f"DELETE FROM {quote_mysql(MARKER_TABLE)} WHERE finished_at < "
                            "UTC_TIMESTAMP(6) - INTERVAL %s DAY", (MARKER_DAYS,))
            return Written(rows, already_done=False)
        finally:
            with contextlib.suppress(Exception):
                await self._sql("SELECT RELEASE_LOCK(%s)", (lock,))

    async def _record(self, export_id: str, table: TargetTable, rows: int, state: str) -> None:
        await self._sql(
            f"INSERT INTO {quote_mysql(MARKER_TABLE)} (export_id, target_table, `rows`, state, finished_at) "
            "VALUES (%s, %s, %s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE state = VALUES(state)",
            (export_id, table.name, rows, state),
        )

    async def _swap(self, table: TargetTable, export_id: str) -> None:
        target, staging = quote_mysql(table.name), quote_mysql(staging_name(export_id))
        old = quote_mysql(retired_name(export_id))
        _, present = await self._sql(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME IN (%s, %s)", (table.name, staging_name(export_id)),
        )
        names = {row[0] for row in present}
        if staging_name(export_id) in names:  # else an earlier attempt's rename already happened
            if table.name in names:
                await self._sql(f"RENAME TABLE {target} TO {old}, {staging} TO {target}")
            else:
                await self._sql(f"RENAME TABLE {staging} TO {target}")
        await self._sql(f"DROP TABLE IF EXISTS {old}")
        await self._sql(f"UPDATE {quote_mysql(MARKER_TABLE)} SET state = 'done' WHERE export_id = %s", (export_id,))

    async def _upsert(self, table: TargetTable, columns: Sequence[ExportColumn], staging: str,
                      export_id: str, rows: int) -> None:
        target = quote_mysql(table.name)
        await self._sql(f"CREATE TABLE IF NOT EXISTS {target} ({_definition(columns)}) {_TABLE_OPTIONS}")
        # Without a unique index on exactly the keys, ON DUPLICATE KEY would just add the rows again.
        _, indexes = await self._sql(
            "SELECT INDEX_NAME, GROUP_CONCAT(LOWER(COLUMN_NAME) ORDER BY SEQ_IN_INDEX SEPARATOR '\\0') "
            "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "AND NON_UNIQUE = 0 GROUP BY INDEX_NAME", (table.name,),
        )
        keys = {c.name.lower() for c in columns if c.key}
        if not any(set(str(cols).split("\0")) == keys for _, cols in indexes):
            raise ExportFailed("target_refused", no_key_message(table.name, [c.name for c in columns if c.key]),
                               retryable=False)
        names = ", ".join(quote_mysql(c.name) for c in columns)
        updates = ", ".join(f"{quote_mysql(c.name)} = VALUES({quote_mysql(c.name)})" for c in columns if not c.key)
        if not updates:  # every column is a key: a row already there stays as it is
            first = quote_mysql(columns[0].name)
            updates = f"{first} = {first}"
        await self._conn.begin()
        try:
            await self._sql(f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging} "
                            f"ON DUPLICATE KEY UPDATE {updates}")
            await self._record(export_id, table, rows, "done")
            await self._conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._conn.rollback()
            raise

    async def _load(self, staging: str, columns: Sequence[ExportColumn], chunks: AsyncIterable[bytes]) -> int:
        """Spool ``chunks`` into files of at most one packet, loading each while the next fills."""
        targets, assignments = [], []
        for index, column in enumerate(columns):
            if column.bigquery == "BYTES" and not column.nested:
                targets.append(f"@v{index}")
                assignments.append(f"{quote_mysql(column.name)} = UNHEX(@v{index})")
            else:
                targets.append(quote_mysql(column.name))
        statement = (
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {staging} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({', '.join(targets)})" + (f" SET {', '.join(assignments)}" if assignments else "")
        )
        # aiomysql sends a local file in packets of up to 16 MiB - 1, and the server refuses a packet
        # (or a 16 MiB - 1 run of them, which it joins) over max_allowed_packet: so each spooled
        # file is one packet below both.
        _, found = await self._sql("SELECT @@max_allowed_packet")
        limit = min(SPOOL_BYTES, int(found[0][0]) - 64 * 1024, 2**24 - 64 * 1024)
        ready: asyncio.Queue[Path | None] = asyncio.Queue(maxsize=1)
        spool = asyncio.create_task(self._spool(chunks, ready, limit), name="mysql-export-spool")
        rows = 0
        try:
            while (path := await _next(ready, spool)) is not None:
                try:
                    with self._conn.loading(path):
                        count, _, problems = await self._run(statement, (str(path),))
                finally:
                    path.unlink(missing_ok=True)
                if problems:
                    text = "; ".join(f"{w[2]} ({w[1]})" for w in problems[:3])
                    raise ExportFailed("bad_value", f"the MySQL target refused a value: {text}", retryable=False)
                rows += count
            await spool  # re-raises what reading or encoding failed with
        finally:
            if not spool.done():
                spool.cancel()
            with contextlib.suppress(BaseException):
                await spool
            while not ready.empty():
                if (left := ready.get_nowait()) is not None:
                    left.unlink(missing_ok=True)
        return rows

    async def _spool(self, chunks: AsyncIterable[bytes], ready: asyncio.Queue[Path | None], limit: int) -> None:
        """Cut the rows into files of at most ``limit`` bytes, each ending at a row's end. The
        file work (creating, 16 MiB writes, finding a row's end) runs in a thread per chunk: the
        event loop also runs the leader lock's watch and the HTTP API."""
        spool = _SpoolFiles(limit, self._spool_dir)
        try:
            async for chunk in chunks:
                rest = memoryview(chunk)
                while len(rest):
                    # One file at most per step, handed over before the next is started: two on
                    # disk at most (this one and the one loading).
                    filled, rest = await asyncio.to_thread(spool.write, rest)
                    if filled is not None:
                        await ready.put(filled)
                        spool.full = None
            if (filled := await asyncio.to_thread(spool.finish)) is not None:
                await ready.put(filled)
                spool.full = None
        finally:
            spool.discard()
        await ready.put(None)


class _SpoolFiles:
    """The files of :meth:`MySQLTarget._spool` (blocking; used from one thread at a time)."""

    def __init__(self, limit: int, directory: Path | None) -> None:
        self.limit, self.directory = limit, directory
        self.out: Any = None
        self.path: Path | None = None  # the file being filled
        self.size = 0
        self.full: Path | None = None  # closed, not yet handed to the loader

    def write(self, view: memoryview) -> tuple[Path | None, memoryview]:
        """Add ``view`` until a file is full: (that file, to load, or None; what is left)."""
        while len(view):
            if self.out is None:
                fd, name = tempfile.mkstemp(prefix="maestro-export-", suffix=".tsv", dir=self.directory)
                self.out, self.path, self.size = os.fdopen(fd, "wb"), Path(name), 0
            room = self.limit - self.size
            if len(view) <= room:
                piece = len(view)
            else:
                piece = bytes(view[:room]).rfind(b"\n") + 1  # whole rows only
                if piece == 0 and self.size == 0:
                    raise ExportFailed("bad_value", f"a row is longer than the target's max_allowed_packet "
                                       f"({self.limit:,} bytes)", retryable=False)
            self.out.write(view[:piece])
            self.size += piece
            view = view[piece:]
            if len(view) or self.size >= self.limit:
                return self._close(), view
        return None, view

    def finish(self) -> Path | None:
        return self._close() if self.out is not None else None

    def _close(self) -> Path:
        self.out.close()
        self.out = None
        assert self.path is not None
        self.full, self.path = self.path, None
        return self.full

    def discard(self) -> None:
        """Failed or cancelled: remove what the loader has not taken."""
        if self.out is not None:
            self.out.close()
            self.out = None
        for path in (self.full, self.path):
            if path is not None:
                path.unlink(missing_ok=True)
        self.full = self.path = None


async def _next(ready: asyncio.Queue[Path | None], spool: asyncio.Task[None]) -> Path | None:
    """The next spooled file, or None at the end; raises what the spooling failed with."""
    getter = asyncio.ensure_future(ready.get())
    done, _ = await asyncio.wait({getter, spool}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    spool.result()  # the spool ended without its end marker: it failed
    raise AssertionError("the spool ended without its end marker")  # pragma: no cover


def _definition(columns: Sequence[ExportColumn]) -> str:
    parts = [f"{quote_mysql(c.name)} {c.mysql()}" for c in columns]
    if keys := [quote_mysql(c.name) for c in columns if c.key]:
        parts.append(f"PRIMARY KEY ({', '.join(keys)})")
    return ", ".join(parts)


def _translated(exc: pymysql.err.MySQLError) -> ExportFailed:
    """The one place where the target's MySQL errors become ours."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    text = f"{exc.args[1] if len(exc.args) > 1 else exc} ({code})"
    if code in _LOST:
        return ExportFailed("connection_lost", f"the connection to the MySQL target was lost: {text}", retryable=True)
    if code in _UNAVAILABLE:
        return ExportFailed("target_unavailable", f"the MySQL target: {text}", retryable=True)
    if code in _RETRY:
        return ExportFailed("conflict", f"the MySQL target: {text}", retryable=True)
    if code == 1148 or code == 3948:
        return ExportFailed("target_refused", f"the MySQL target does not allow LOAD DATA LOCAL INFILE "
                            f"(set local_infile=ON on the server): {text}", retryable=False)
    if isinstance(exc, pymysql.err.DataError | pymysql.err.IntegrityError) or code == 4025:
        return ExportFailed("bad_value", f"the MySQL target refused a value: {text}", retryable=False)
    return ExportFailed("target_refused", f"the MySQL target refused the export: {text}", retryable=False)

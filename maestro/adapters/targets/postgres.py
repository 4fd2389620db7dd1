"""Write an exported table into PostgreSQL: staging, ``COPY FROM STDIN``, swap — one transaction.

Everything an export does happens in a single transaction, so a failure anywhere (a bad value,
a killed connection, a crash of Maestro) rolls all of it back: the previous table is untouched and
no staging table is left. Readers keep reading the previous table until the commit; the swap
(``DROP`` the previous table, ``RENAME`` the staging table in) takes its ACCESS EXCLUSIVE lock
only at the end, and a query waiting on that lock resolves the name again once it is granted,
so it reads the new table — never a missing or partial one.

Exactly once: the commit also records the export in ``_maestro_exports`` (in the target schema).
An export whose id is recorded there is not written again: a retry after a crash that struck
between the commit and Maestro recording the outcome adopts it. A transaction-level advisory
lock on the export id keeps two replicas from writing the same export at once.

    async with open_target(dsn, password) as target:
        written = await target.export(table, columns, chunks, export_id=..., mode="replace")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence

import asyncpg

from maestro.adapters.sources.postgres import _connect_args
from maestro.adapters.targets.common import MARKER_DAYS, MARKER_TABLE, TargetTable, Written, no_key_message, staging_name
from maestro.adapters.targets.types import ExportColumn, quote_postgres
from maestro.errors import database_unavailable
from maestro.errors_outside import ExportFailed

# The system catalogs' unique indexes on names, which a concurrent CREATE of one name trips.
_CATALOG_NAMES = frozenset({"pg_type_typname_nsp_index", "pg_class_relname_nsp_index"})
_SESSION = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "application_name": "maestro-export"}


@contextlib.asynccontextmanager
async def open_target(
    dsn: str, password: str | None = None, *, connect_timeout: float = 10.0, statement_timeout: float = 6 * 3600.0,
) -> AsyncIterator[PostgresTarget]:
    settings = dict(_SESSION, statement_timeout=str(int(statement_timeout * 1000)))
    try:
        conn = await asyncpg.connect(
            **_connect_args(dsn), password=password, timeout=connect_timeout, server_settings=settings,
        )
    except (OSError, ValueError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ExportFailed("target_unavailable", f"cannot connect to the PostgreSQL target: "
                           f"{type(exc).__name__}: {exc}", retryable=True) from exc
    try:
        yield PostgresTarget(conn)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout=5)
        if not conn.is_closed():
            conn.terminate()


class PostgresTarget:
    driver = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def abort(self) -> None:
        """Drop the connection now: the open transaction rolls back on the server."""
        self._conn.terminate()

    async def export(
        self, table: TargetTable, columns: Sequence[ExportColumn], chunks: AsyncIterable[bytes], *,
        export_id: str, mode: str = "replace",
    ) -> Written:
        """Write the rows ``chunks`` carry (load-format text) as ``table``; see the module doc."""
        try:
            schema = await self._marker_table(table)
            async with self._conn.transaction():
                return await self._export(table, columns, chunks, export_id, mode, schema)
        except ExportFailed:
            raise
        except asyncpg.PostgresError as exc:
            raise _translated(exc, table, columns) from exc
        except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError) as exc:
            raise ExportFailed("connection_lost", f"the connection to the PostgreSQL target was lost: "
                               f"{type(exc).__name__}: {exc}", retryable=True) from exc

    async def _marker_table(self, table: TargetTable) -> str:
        """The target schema, with its marker table created in a short transaction of its own: made
        inside the long export transaction, two first exports into a schema would both create it,
        the second waiting for the first's whole COPY only to fail on the catalog's unique index.
        Serialised per schema, so the second sees the first's table."""
        conn = self._conn
        schema = table.schema or await conn.fetchval("SELECT current_schema()")
        if schema is None:
            raise ExportFailed("target_refused", "the target has no current schema: set db_export.schema",
                               retryable=False)
        marker = f"{quote_postgres(schema)}.{quote_postgres(MARKER_TABLE)}"
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"maestro-marker:{schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {marker} (export_id text PRIMARY KEY, target_table text NOT NULL, "
                "rows bigint NOT NULL, finished_at timestamptz NOT NULL DEFAULT now())"
            )
        return schema

    async def _export(
        self, table: TargetTable, columns: Sequence[ExportColumn], chunks: AsyncIterable[bytes],
        export_id: str, mode: str, schema: str,
    ) -> Written:
        conn = self._conn
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", export_id)
        q_schema = quote_postgres(schema)
        marker = f"{q_schema}.{quote_postgres(MARKER_TABLE)}"
        done = await conn.fetchval(f"SELECT rows FROM {marker} WHERE export_id = $1", export_id)
        if done is not None:
            return Written(int(done), already_done=True)
        target = f"{q_schema}.{quote_postgres(table.name)}"
        stage_name = staging_name(export_id)
        staging = f"{q_schema}.{quote_postgres(stage_name)}"
        keys = [c for c in columns if c.key]
        await conn.execute(f"DROP TABLE IF EXISTS {staging}")
        await conn.execute(f"CREATE TABLE {staging} ({_definition(columns)})")
        status = await conn.copy_to_table(
            stage_name, source=chunks, schema_name=schema, columns=[c.name for c in columns], format="text",
        )
        rows = int(status.split()[-1])
        if mode == "replace":
            await conn.execute(f"DROP TABLE IF EXISTS {target}")
            await conn.execute(f"ALTER TABLE {staging} RENAME TO {quote_postgres(table.name)}")
        else:
            # Two upserts creating one new table: the second waits here for the first's commit, then
            # sees its table (instead of a unique-index failure on the catalog).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               f"maestro-table:{schema}.{table.name}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {target} ({_definition(columns)})")
            names = ", ".join(quote_postgres(c.name) for c in columns)
            conflict = ", ".join(quote_postgres(c.name) for c in keys)
            updates = ", ".join(f"{quote_postgres(c.name)} = EXCLUDED.{quote_postgres(c.name)}"
                                for c in columns if not c.key)
            action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
            await conn.execute(
                f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging} ON CONFLICT ({conflict}) {action}"
            )
            await conn.execute(f"DROP TABLE {staging}")
        await conn.execute(f"INSERT INTO {marker} (export_id, target_table, rows) VALUES ($1, $2, $3)",
                           export_id, f"{schema}.{table.name}", rows)
        await conn.execute(f"DELETE FROM {marker} WHERE finished_at < now() - make_interval(days => $1)",
                           MARKER_DAYS)
        return Written(rows, already_done=False)


def _definition(columns: Sequence[ExportColumn]) -> str:
    parts = [f"{quote_postgres(c.name)} {c.postgres()}" for c in columns]
    if keys := [quote_postgres(c.name) for c in columns if c.key]:
        parts.append(f"PRIMARY KEY ({', '.join(keys)})")
    return ", ".join(parts)


def _translated(exc: asyncpg.PostgresError, table: TargetTable, columns: Sequence[ExportColumn]) -> ExportFailed:
    """The one place where the target's PostgreSQL errors become ours."""
    sqlstate = str(getattr(exc, "sqlstate", "") or "")
    detail = getattr(exc, "detail", None)
    context = getattr(exc, "context", None) or getattr(exc, "where", None)
    message = str(exc) + (f" ({detail})" if detail else "") + (f" [{context}]" if context else "")
    if database_unavailable(exc):
        return ExportFailed("target_unavailable", f"the PostgreSQL target: {message}", retryable=True)
    if sqlstate == "57014":
        return ExportFailed("timeout", f"the PostgreSQL target cancelled the export: {message}", retryable=True)
    if sqlstate in ("40001", "40P01", "55P03"):
        return ExportFailed("conflict", f"the PostgreSQL target: {message}", retryable=True)
    if sqlstate == "23505" and getattr(exc, "constraint_name", None) in _CATALOG_NAMES:
        # Two transactions created one table at once (the catalog's unique index): not our data.
        return ExportFailed("conflict", f"the PostgreSQL target: {message}; another export created the "
                            "same table at the same moment", retryable=True)
    if sqlstate.startswith(("22", "23")):  # data exception, integrity constraint violation
        return ExportFailed("bad_value", f"the PostgreSQL target refused a value: {message}", retryable=False)
    if sqlstate == "42P10":  # ON CONFLICT names columns without a unique index
        keys = [c.name for c in columns if c.key]
        return ExportFailed("target_refused", no_key_message(table.name, keys), retryable=False)
    if sqlstate == "2BP01":
        return ExportFailed("target_refused", f"{table.name}: other objects depend on the table (views?): "
                            f"a replace export recreates it; {message}", retryable=False)
    return ExportFailed("target_refused", f"the PostgreSQL target refused the export: {message}", retryable=False)


"""PostgreSQL: connection pools and schema migrations.

Migrations are the numbered ``sql/NNN_name.sql`` files, applied in order at start-up, each in its
own transaction, recorded in ``schema_migrations`` with a checksum. A session-level advisory lock
makes two processes that start at once take turns: the second finds the work done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from maestro.errors import ConfigurationError

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MIGRATION_LOCK = 7283000
_MIGRATION_NAME = re.compile(r"(\d{3,})_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if match is None:
            continue  # schema.sql and other non-migration files
        migrations.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"duplicate migration numbers in {sql_dir}: {versions}")
    return migrations


async def migrate(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to call concurrently."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {
            r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        for migration in load_migrations(sql_dir):
            recorded = done.get(migration.version)
            if recorded is not None:
                if recorded["checksum"] != migration.checksum:
                    raise ConfigurationError(
                        f"migration {migration.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.name)
            log.info("migration applied", extra={"migration": migration.name})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


async def migrate_dsn(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, sql_dir)
    finally:
        await conn.close()


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` on the server of ``admin_dsn`` unless it exists."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a concurrent start won
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            # Projections and the store build their SQL from a handful of fixed statements; the
            # JIT only slows those down.
            server_settings={"jit": "off", "application_name": "maestro"},
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(f"cannot connect to PostgreSQL ({_redact(dsn)}): {exc}") from exc
    assert pool is not None
    version = await pool.fetchval("SHOW server_version_num")
    if int(version) < 130000:
        await pool.close()
        raise ConfigurationError(f"PostgreSQL >= 13 is required, found {version}")
    return pool


def _redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)


class LeaderLock:
    """Leadership among replicas: a session advisory lock held on a dedicated connection.

    The lock dies with the connection, so a replica that crashes hands leadership over at once;
    the others retry every ``retry`` seconds. A leader must also *notice* that it lost the lock
    (its connection was terminated, the server restarted, the network dropped), or it goes on
    acting beside the new leader: :meth:`watch` returns as soon as the connection closes (asyncpg
    sees the socket end at once) and otherwise checks it every ``check`` seconds, so a leader stops
    within about ``2 * check`` seconds of losing the lock.
    """

    def __init__(self, dsn: str, key: int, *, retry: float = 2.0, check: float = 1.0) -> None:
        self.dsn = dsn
        self.key = key
        self.retry = retry
        self.check = check
        self.last_error: str | None = None  # why the last try_acquire could not ask
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()

    async def try_acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.dsn, timeout=max(self.retry, 5.0))
                self._lost = asyncio.Event()
                self._conn.add_termination_listener(lambda _conn: self._lost.set())
            acquired = bool(await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", self.key, timeout=max(self.retry, 5.0)
            ))
            self.last_error = None
            return acquired
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("leader lock unavailable", extra={"error": self.last_error})
            await self.release()
            return False

    async def watch(self) -> str:
        """Wait while this process holds the lock; return why it may have lost it."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return "the lock's connection is closed"
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self.check)
                return "the lock's connection was closed"
            try:
                held = await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND objid = $1", self.key, timeout=self.check,
                )
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("leader lock check failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                return f"the lock's connection failed ({type(exc).__name__})"
            if not held:
                return "the lock is no longer held"

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=2.0)
            except Exception:  # a dead server: drop the socket
                conn.terminate()

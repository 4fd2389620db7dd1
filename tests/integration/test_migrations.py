"""Migrations: from zero they give exactly sql/schema.sql; concurrent starts do not race."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
from dsns import with_database
import pytest

from maestro.adapters import postgres
from maestro.errors import ConfigurationError

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "sql" / "schema.sql"

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, ordinal_position
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, ordinal_position""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), md5(prosrc)
        FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "sequences": """
        SELECT sequencename, data_type, increment_by, cache_size
        FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1""",
}


async def _catalog(dsn: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {k: [tuple(r) for r in await conn.fetch(q)] for k, q in CATALOG_QUERIES.items()}
    finally:
        await conn.close()


async def test_migrating_from_zero_equals_schema_sql(fresh_database, pg_admin_dsn) -> None:
    migrated_dsn, _ = fresh_database
    conn = await asyncpg.connect(migrated_dsn)
    applied = await postgres.migrate(conn)
    await conn.close()
    assert applied == [m.name for m in postgres.load_migrations()]

    name = f"maestro_schema_sql_{uuid.uuid4().hex[:8]}"  # two suites may share the server
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        schema_dsn = with_database(pg_admin_dsn, name)
        conn = await asyncpg.connect(schema_dsn)
        await conn.execute(SCHEMA_SQL.read_text())
        await conn.close()
        migrated, from_schema = await _catalog(migrated_dsn), await _catalog(schema_dsn)
        for key in CATALOG_QUERIES:
            assert migrated[key] == from_schema[key], (
                f"sql/schema.sql is out of date ({key}); run `make schema`"
            )
        assert migrated["columns"], "nothing was compared"
    finally:
        admin = await asyncpg.connect(pg_admin_dsn)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_concurrent_migrations_apply_each_file_once(fresh_database) -> None:
    dsn, _ = fresh_database
    conns = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(postgres.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    names = [m.name for m in postgres.load_migrations()]
    assert sorted(sum(results, [])) == sorted(names)  # each applied by exactly one process
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(names)
        assert await postgres.migrate(conn) == []  # idempotent
    finally:
        await conn.close()


async def test_an_edited_applied_migration_is_refused(fresh_database, tmp_path) -> None:
    dsn, _ = fresh_database
    for m in postgres.load_migrations():
        (tmp_path / f"{m.name}.sql").write_text(m.sql)
    conn = await asyncpg.connect(dsn)
    try:
        await postgres.migrate(conn, tmp_path)
        first = sorted(tmp_path.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(ConfigurationError, match="changed after it was applied"):
            await postgres.migrate(conn, tmp_path)
    finally:
        await conn.close()

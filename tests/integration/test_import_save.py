"""Import tables checked at save against their real sources; manual re-imports; the import's state.

Sources: a PostgreSQL database of its own on the tests' server (``fresh_database``) and a MariaDB
database on 127.0.0.1:3306 (root, no password) created and dropped by the fixture. A source that
cannot be reached is a closed port, or a local socket that accepts and never answers.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from click.testing import CliRunner
from sources import mysql_execute

from maestro.cli_catalog import apply_command
from maestro.events.imports import ImportUploaded
from maestro.events.model import Metadata
from maestro.events.runs import (
    ImportSpec, JobConfig, JobFailed, JobPlanned, JobStatistics, JobSucceeded, Watermark,
)
from maestro.events.store import NO_STREAM
from maestro.handlers.catalog.apply import execute, load_rows, plan
from maestro.handlers.catalog.folder import read_folder
from maestro.handlers.catalog.import_check import ImportsRefused

ACTOR = Metadata(actor="cli:tester")
CLOSED = "postgresql://nobody@127.0.0.1:1/none"

PG_TABLES = """
CREATE SCHEMA shop;
CREATE TABLE shop.accounts (
    id bigint PRIMARY KEY, name text, updated_at timestamptz, tags integer[], doc jsonb
);
CREATE TABLE shop.odd (id bigint, cash money);
"""
MYSQL_TABLE = "CREATE TABLE accounts (id int PRIMARY KEY, name varchar(20), doc json, updated_at datetime)"


@pytest.fixture
async def pg_source(fresh_database: tuple[str, str]) -> str:
    """A PostgreSQL source database; its DSN as a database entry takes it (no password)."""
    dsn, _ = fresh_database
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(PG_TABLES)
    finally:
        await conn.close()
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    netloc = f"{user}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def my_source() -> AsyncIterator[str]:
    name = f"maestro_t_{uuid.uuid4().hex[:12]}"
    await mysql_execute(None, f"CREATE DATABASE `{name}`")
    try:
        await mysql_execute(name, MYSQL_TABLE)
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        await mysql_execute(None, f"DROP DATABASE IF EXISTS `{name}`")


async def register(client: Any, name: str, driver: str, dsn: str) -> None:
    resp = await client.post("/api/v1/databases", json={
        "name": name, "driver": driver, "dsn": dsn, "landing_dataset": f"{name}_raw",
    })
    assert resp.status == 201, await resp.text()


async def save(client: Any, settings: dict[str, Any], name: str = "accounts") -> Any:
    return await client.post("/api/v1/tables", json={
        "dataset": "crm_raw", "name": name, "kind": "import", "import": settings,
    })


async def table_events(runtime: Any) -> int:
    return await runtime.pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'table-%'")


async def refused(resp: Any, code: str, field: str) -> dict[str, Any]:
    """The error of a refused save: 422, its stable code, the field it names."""
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == code, error
    assert error["details"]["field"] == field, error
    assert error["message"].startswith(f"{field}: "), error
    return error


# ---------------------------------------------------------------------------------- refusals
async def test_an_unknown_source_database_is_refused_and_appends_nothing(client, runtime) -> None:
    error = await refused(await save(client, {"source_database": "nowhere", "source_table": "accounts"}),
                          "validation_failed", "import.source_database")
    assert "'nowhere'" in error["message"] and "/api/v1/databases" in error["message"]
    assert error["details"]["problems"] == [{"field": "import.source_database", "message": error["message"].split(": ", 1)[1]}]
    assert await table_events(runtime) == 0


async def test_a_query_outside_the_primitive_is_refused_where_the_user_wrote_it(
    client, runtime, pg_source, my_source
) -> None:
    await register(client, "crm", "postgres", pg_source)
    await register(client, "shop", "mysql", my_source)

    query = "SELECT id,\n  name\nFROM shop.accounts a JOIN shop.accounts b ON a.id = b.id"
    error = await refused(await save(client, {"source_database": "crm", "query": query}),
                          "import_query_refused", "import.query")
    assert (error["details"]["line"], error["details"]["column"]) == (3, query.split("\n")[2].index("JOIN") + 1)
    assert "JOIN" in error["message"] and error["message"].endswith(f"(line 3, column {error['details']['column']})")

    # The earlier select/where form: the position is in the field written, not in the query built.
    where = "name = 'x'\n  AND id IN (SELECT 1)"
    error = await refused(
        await save(client, {"source_database": "crm", "source_table": "shop.accounts", "select": "id, name", "where": where}),
        "import_query_refused", "import.where",
    )
    assert (error["details"]["line"], error["details"]["column"]) == (2, where.split("\n")[1].index("SELECT") + 1)
    error = await refused(
        await save(client, {"source_database": "crm", "source_table": "shop.accounts", "select": "id, upper(name)"}),
        "import_query_refused", "import.select",
    )
    assert (error["details"]["line"], error["details"]["column"]) == (1, 5)
    await refused(await save(client, {"source_database": "crm", "source_table": "shop accounts"}),
                  "import_query_refused", "import.source_table")

    # Parsed in the source's own dialect: MySQL's SLEEP() is not on the allow-list.
    query = "SELECT id FROM accounts WHERE SLEEP(1) = 0"
    error = await refused(await save(client, {"source_database": "shop", "query": query}),
                          "import_query_refused", "import.query")
    assert (error["details"]["line"], error["details"]["column"]) == (1, query.index("SLEEP") + 1)
    assert await table_events(runtime) == 0


async def test_the_incremental_column_must_be_one_the_query_selects(client, runtime, pg_source, my_source) -> None:
    await register(client, "crm", "postgres", pg_source)
    await register(client, "shop", "mysql", my_source)

    error = await refused(
        await save(client, {"source_database": "crm", "query": "SELECT id, name FROM shop.accounts", "id_column": "updated_at"}),
        "validation_failed", "import.id_column",
    )
    assert "'updated_at' is not a column the query selects (id, name)" in error["message"]
    error = await refused(
        await save(client, {"source_database": "crm", "query": "SELECT id FROM shop.accounts LIMIT 10", "id_column": "id"}),
        "validation_failed", "import.query",
    )
    assert "takes no LIMIT" in error["message"]
    # By its source or output name, ignoring case, as the importer finds it.
    for query, column in [("SELECT id AS key, name FROM shop.accounts", "id"), ("SELECT id AS key FROM shop.accounts", "KEY")]:
        resp = await save(client, {"source_database": "crm", "query": query, "id_column": column}, name=f"by_{column}")
        assert resp.status == 201, await resp.text()
    # With *, the source's columns decide: a column it lacks, or one that does not order.
    error = await refused(
        await save(client, {"source_database": "crm", "source_table": "shop.accounts", "id_column": "nope"}),
        "validation_failed", "import.id_column",
    )
    assert "has no column 'nope'" in error["message"]
    error = await refused(
        await save(client, {"source_database": "crm", "source_table": "shop.accounts", "id_column": "tags"}),
        "validation_failed", "import.id_column",
    )
    assert "'tags' is an array" in error["message"]
    error = await refused(
        await save(client, {"source_database": "shop", "query": "SELECT * FROM accounts", "id_column": "doc"}),
        "validation_failed", "import.id_column",
    )
    assert "'doc' is JSON" in error["message"]
    assert await table_events(runtime) == 2  # the two saved above, nothing else


async def test_a_source_table_or_column_that_does_not_exist_is_refused_by_name(
    client, runtime, pg_source, my_source
) -> None:
    await register(client, "crm", "postgres", pg_source)
    await register(client, "shop", "mysql", my_source)

    error = await refused(await save(client, {"source_database": "crm", "source_table": "shop.nope"}),
                          "source_table_not_found", "import.source_table")
    assert '"shop"."nope"' in error["message"] and error["details"]["table"] == '"shop"."nope"'
    error = await refused(await save(client, {"source_database": "shop", "query": "SELECT id FROM missing"}),
                          "source_table_not_found", "import.query")
    assert "`missing`" in error["message"]
    error = await refused(await save(client, {"source_database": "crm", "query": "SELECT id, nope FROM shop.accounts"}),
                          "source_column_error", "import.query")
    assert error["details"]["column"] == "nope" and "'nope'" in error["message"]
    error = await refused(
        await save(client, {"source_database": "crm", "source_table": "shop.odd", "select": "id, cash"}),
        "source_column_error", "import.select",
    )
    assert (error["details"]["column"], error["details"]["source_type"]) == ("cash", "money")
    assert "no BigQuery mapping" in error["message"]
    await refused(await save(client, {"source_database": "shop", "query": "SELECT ID, Nope FROM accounts"}),
                  "source_column_error", "import.query")
    assert await table_events(runtime) == 0


async def test_a_valid_import_saves_without_warnings_and_edits_are_checked(
    client, runtime, pg_source, my_source
) -> None:
    await register(client, "crm", "postgres", pg_source)
    await register(client, "shop", "mysql", my_source)

    resp = await save(client, {"source_database": "crm", "source_table": "shop.accounts",
                               "select": "id, name, updated_at", "id_column": "updated_at"})
    assert resp.status == 201, await resp.text()
    table = await resp.json()
    assert table["warnings"] == [] and table["import"]["id_column"] == "updated_at"
    resp = await save(client, {"source_database": "shop", "query": "SELECT ID, name, doc FROM accounts WHERE id > 10",
                               "id_column": "id"}, name="shop_accounts")
    assert resp.status == 201 and (await resp.json())["warnings"] == []

    path = f"/api/v1/tables/{table['id']}"
    resp = await client.patch(path, json={"description": "accounts from the CRM"})
    assert resp.status == 200 and (await resp.json())["warnings"] == []
    # A change of the import settings is checked like a create; refused, it records nothing.
    version = (await resp.json())["version"]
    bad = {"source_database": "crm", "query": "SELECT id FROM shop.accounts ORDER BY id"}
    await refused(await client.patch(path, json={"import": bad}), "import_query_refused", "import.query")
    put = {"dataset": "crm_raw", "name": "accounts", "kind": "import",
           "import": {"source_database": "crm", "source_table": "shop.gone"}}
    await refused(await client.put(path, json=put), "source_table_not_found", "import.source_table")
    after = await (await client.get(path)).json()
    assert after["version"] == version and after["import"]["select"] == "id, name, updated_at"
    resp = await client.patch(path, json={"import": {"source_database": "crm", "query": "SELECT id, doc FROM shop.accounts"}})
    assert resp.status == 200 and (await resp.json())["version"] == version + 1


async def test_a_source_that_cannot_be_reached_saves_with_a_warning(client, runtime) -> None:
    await register(client, "offline", "postgres", CLOSED)
    resp = await save(client, {"source_database": "offline", "source_table": "accounts", "id_column": "id"})
    assert resp.status == 201, await resp.text()
    table = await resp.json()
    [warning] = table["warnings"]
    assert warning.startswith("crm_raw.accounts: saved without checking the source table and its columns")
    assert "'offline' cannot be reached" in warning
    # The static checks still ran: a bad query to the same source is refused.
    await refused(await save(client, {"source_database": "offline", "query": "SELECT * FROM a, b"}, name="other"),
                  "import_query_refused", "import.query")
    # An edit that leaves the import settings alone does not ask the source again.
    path = f"/api/v1/tables/{table['id']}"
    assert (await (await client.patch(path, json={"description": "x"})).json())["warnings"] == []
    resp = await client.patch(path, json={"import": {"source_database": "offline", "source_table": "accounts2"}})
    assert len((await resp.json())["warnings"]) == 1


async def test_a_source_that_never_answers_does_not_hold_the_save(client, runtime) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, reads, never answers; ends when the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await register(client, "hung", "postgres", f"postgresql://maestro@127.0.0.1:{port}/crm")
        await register(client, "hungmy", "mysql", f"mysql://root@127.0.0.1:{port}/crm")
        for database in ("hung", "hungmy"):
            started = time.monotonic()
            resp = await save(client, {"source_database": database, "source_table": "accounts"}, name=database)
            elapsed = time.monotonic() - started
            assert resp.status == 201, await resp.text()
            [warning] = (await resp.json())["warnings"]
            assert f"source database {database!r}" in warning, warning
            assert elapsed < 4.0, elapsed  # the check's 2.5 s, not the drivers' own timeouts
    finally:
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------------- apply
async def test_apply_of_a_folder_with_a_bad_import_is_refused_whole(runtime, pg_source, tmp_path: Path) -> None:
    assert runtime.config_service is not None
    await runtime.config_service.add_database(
        "crm", {"driver": "postgres", "dsn": pg_source, "landing_dataset": "crm_raw"}, ACTOR
    )
    files = {
        "mart/daily.sql": "SELECT 1 AS x\n",
        "crm_raw/accounts.yaml": "kind: import\nimport: {source_database: crm, source_table: shop.accounts, id_column: id}\n",
        "crm_raw/joined.yaml": textwrap.dedent("""\
            kind: import
            import:
              source_database: crm
              query: SELECT a.id FROM shop.accounts a, shop.accounts b
        """),
        "crm_raw/missing.yaml": "kind: import\nimport: {source_database: crm, source_table: shop.missing}\n",
    }
    folder = tmp_path / "repo"
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)

    the_plan = plan(read_folder(folder), await load_rows(runtime.catalog), prune=False)
    with pytest.raises(ImportsRefused) as caught:
        await execute(the_plan, runtime.catalog, ACTOR, dry_run=True)
    with pytest.raises(ImportsRefused):
        await execute(the_plan, runtime.catalog, ACTOR)
    assert caught.value.problems == [
        "crm_raw.joined: import.query: an import query cannot contain several tables (an import reads one "
        "table) (line 1, column 33)",
        'crm_raw.missing: import.source_table: the source has no table "shop"."missing" (or cannot show it)',
    ]
    assert [p["code"] for p in caught.value.details["problems"]] == ["import_query_refused", "source_table_not_found"]
    assert await table_events(runtime) == 0

    # The CLI: exit 2, each refusal on its own line, nothing applied; fixed, it applies.
    base = ["--database-url", runtime.dsn, "--data-dir", str(tmp_path / "cli")]
    result = await asyncio.to_thread(CliRunner().invoke, apply_command, [str(folder), *base])
    assert result.exit_code == 2, result.output
    assert "nothing was applied" in result.stderr
    assert "  crm_raw.missing: import.source_table: the source has no table" in result.stderr
    assert await table_events(runtime) == 0
    (folder / "crm_raw/joined.yaml").unlink()
    (folder / "crm_raw/missing.yaml").unlink()
    result = await asyncio.to_thread(CliRunner().invoke, apply_command, [str(folder), *base])
    assert result.exit_code == 0, result.output
    assert "applied: 2 created" in result.stdout and "warning" not in result.stderr


# ---------------------------------------------------------------------------------- re-import
async def _offline_import(client: Any, name: str = "accounts", id_column: str | None = "id") -> str:
    if (await client.get("/api/v1/databases/offline")).status == 404:
        await register(client, "offline", "postgres", CLOSED)
    resp = await save(client, {"source_database": "offline", "source_table": "accounts", "id_column": id_column}, name)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def test_reimport_records_the_request_and_can_run_the_table(client, runtime) -> None:
    table_id = await _offline_import(client)
    resp = await client.post(f"/api/v1/tables/{table_id}/reimport", json={"reason": "the source was repaired"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["reason"] == "the source was repaired" and body["run_id"] is None
    [event] = await runtime.store.read(f"import-{table_id}")
    assert event.type == "ReimportRequested"
    assert event.event.model_dump() == {"table_id": table_id, "reason": "the source was repaired"}
    assert event.metadata.actor == body["requested_by"] and event.metadata.actor.startswith("user:")

    # Without a body: a default reason. With ?run=true (or "run": true): a table run, planned after it.
    resp = await client.post(f"/api/v1/tables/{table_id}/reimport", params={"run": "true"})
    assert resp.status == 202
    run_id = (await resp.json())["run_id"]
    [planned] = await runtime.store.read(f"run-{run_id}")
    assert planned.type == "RunPlanned" and [t.table_id for t in planned.event.tables] == [table_id]
    assert planned.event.tables[0].config.kind == "import"
    requests = await runtime.store.read(f"import-{table_id}")
    assert requests[-1].event.reason == "manual re-import" and requests[-1].position < planned.position
    resp = await client.post(f"/api/v1/tables/{table_id}/reimport", json={"run": True})
    assert resp.status == 202 and (await resp.json())["run_id"] not in (None, run_id)

    summary = await client.post("/api/v1/tables", json={"dataset": "mart", "name": "s", "query": "SELECT 1 AS x"})
    resp = await client.post(f"/api/v1/tables/{(await summary.json())['id']}/reimport")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "conflict"
    assert "not an import table" in (await resp.json())["error"]["message"]
    assert (await client.post("/api/v1/tables/nope/reimport")).status == 404
    assert (await client.post(f"/api/v1/tables/{table_id}/reimport", json={"why": "x"})).status == 422
    await client.delete(f"/api/v1/tables/{table_id}")
    assert (await client.post(f"/api/v1/tables/{table_id}/reimport")).status == 409
    assert len(await runtime.store.read(f"import-{table_id}")) == 3


async def test_the_import_state_before_and_after_an_import(client, runtime) -> None:
    table_id = await _offline_import(client)
    path = f"/api/v1/tables/{table_id}/import"
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "id": table_id, "source_database": "offline", "mode": "incremental", "column": "id",
        "watermark": None, "last_import": None, "reimport_requested": None,
    }
    await client.post(f"/api/v1/tables/{table_id}/reimport", json={"reason": "first"})
    pending = (await (await client.get(path)).json())["reimport_requested"]
    assert pending["reason"] == "first" and pending["requested_by"].startswith("user:")

    # An import as the log records one: its plan, its upload, its load (with the watermark).
    system = Metadata(actor="system:runner")
    spec = ImportSpec(source_database="offline", table="accounts", id_column="id")
    imp = JobConfig(kind="import", project="p", destination="p.crm_raw.accounts", import_spec=spec)
    await runtime.store.append("job-imp-1", NO_STREAM, [
        JobPlanned(job_id="imp-1", run_id="r1", table_id=table_id, config=imp),
        ImportUploaded(job_id="imp-1", run_id="r1", table_id=table_id, uri="gs://b/o-1.parquet", generation=7,
                       rows=3, bytes=1000, row_groups=1, seconds=0.5),
    ], system)
    mark = Watermark(column="id", value=42)
    load = JobConfig(kind="load", project="p", destination="p.crm_raw.accounts", source_uris=["gs://b/o-1.parquet"],
                     write_disposition="WRITE_APPEND", import_job_id="imp-1", watermark=mark)
    await runtime.store.append("job-load-1", NO_STREAM, [
        JobPlanned(job_id="load-1", run_id="r1", table_id=table_id, config=load),
        JobSucceeded(job_id="load-1", run_id="r1", table_id=table_id, statistics=JobStatistics(output_rows=3),
                     watermark=mark),
    ], system)
    await runtime.store.append("job-imp-1", 2, [
        JobSucceeded(job_id="imp-1", run_id="r1", table_id=table_id, statistics=JobStatistics(output_rows=3)),
    ], system)
    # (The runs projection is inline: the jobs rows are there once the appends return.)

    state = await (await client.get(path)).json()
    assert state["watermark"]["value"] == 42 and state["watermark"]["column"] == "id"
    assert state["watermark"]["load_job_id"] == "load-1" and state["watermark"]["import_job_id"] == "imp-1"
    last = state["last_import"]
    assert (last["job_id"], last["run_id"], last["state"], last["rows"]) == ("imp-1", "r1", "succeeded", 3)
    assert last["finished_at"] is not None and last["planned_at"] is not None
    assert state["reimport_requested"] is None  # the import was planned after the request
    await client.post(f"/api/v1/tables/{table_id}/reimport", json={"reason": "again"})
    assert (await (await client.get(path)).json())["reimport_requested"]["reason"] == "again"
    # An import planned after the request that fails leaves it pending, as the importer sees it.
    await runtime.store.append("job-imp-2", NO_STREAM, [
        JobPlanned(job_id="imp-2", run_id="r2", table_id=table_id, config=imp),
        JobFailed(job_id="imp-2", run_id="r2", table_id=table_id, reason="source_unavailable",
                  message="cannot connect to the PostgreSQL source", retryable=True),
    ], system)
    state = await (await client.get(path)).json()
    assert (state["last_import"]["job_id"], state["last_import"]["state"]) == ("imp-2", "failed")
    assert state["last_import"]["error"] == "cannot connect to the PostgreSQL source"
    assert state["reimport_requested"]["reason"] == "again" and state["watermark"]["value"] == 42

    full = await _offline_import(client, "full_copy", id_column=None)
    state = await (await client.get(f"/api/v1/tables/{full}/import")).json()
    assert (state["mode"], state["column"], state["watermark"]) == ("full", None, None)
    summary = await client.post("/api/v1/tables", json={"dataset": "mart", "name": "s", "query": "SELECT 1 AS x"})
    assert (await client.get(f"/api/v1/tables/{(await summary.json())['id']}/import")).status == 409
    assert (await client.get("/api/v1/tables/nope/import")).status == 404

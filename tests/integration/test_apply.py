"""``maestro apply`` / ``maestro export``: a folder of SQL files synced into the catalog and back."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from maestro.cli_catalog import apply_command, export_command
from maestro.errors import CycleDetected
from maestro.events.catalog import TableSpec
from maestro.events.model import Metadata
from maestro.handlers.catalog.apply import Report, canonical_payload, execute, load_rows, plan
from maestro.handlers.catalog.folder import EXPORT_MARKER, ExportRefused, FolderInvalid, export, read_folder
from maestro.runtime import Runtime, open_runtime
from maestro.settings import Settings

ACTOR = Metadata(actor="cli:tester")
# SAMPLE's import reads the source database crm: registered, at a closed port (its saves warn
# that the source could not be checked; tests/integration/test_import_save.py checks sources).
CRM = {"driver": "postgres", "dsn": "postgresql://maestro@127.0.0.1:1/crm", "landing_dataset": "crm"}


async def register_crm(runtime: Runtime) -> None:
    assert runtime.config_service is not None
    await runtime.config_service.add_database("crm", CRM, ACTOR)


async def google_credentials(runtime: Runtime) -> None:
    """A Google project and service-account key: a table with a Sheets export needs them to save."""
    assert runtime.config_service is not None
    key = '{"type": "service_account", "client_email": "m@acme.iam.gserviceaccount.com", "private_key": "k"}'
    await runtime.config_service.set_section(
        "bigquery", {"project": "acme-data", "service_account_json": key}, ACTOR, partial=True)


@pytest.fixture
async def runtime(runtime: Runtime) -> Runtime:
    await register_crm(runtime)
    return runtime

SAMPLE = {
    "raw/events.yaml": """
        kind: external
        external: {format: ndjson, wait_timeout: 600}
        description: Events pushed by the app
    """,
    "crm/accounts.yaml": """
        kind: import
        import:
          source_database: crm
          source_table: accounts
          id_column: id
    """,
    "stg/orders.sql": """
        /*---
        description: Orders out of the event stream
        labels: {team: data}
        ---*/
        SELECT * FROM `raw.events` WHERE type = 'order'
    """,
    "mart/daily.sql": """
        /*---
        description: |
          Revenue per day and country.
          Second line.
        partitioning: {type: column, column: day}
        clustering: [country]
        labels:
          team: growth
          tier: gold
        ---*/

        WITH o AS (SELECT * FROM stg.orders)
        SELECT DATE(o.at) AS day, a.country, SUM(o.amount) AS revenue
        FROM o, crm.accounts AS a
        WHERE a.id = o.account_id
        GROUP BY 1, 2
    """,
    "mart/weekly.sql": """
        SELECT DATE_TRUNC(day, WEEK) AS week, SUM(revenue) AS revenue
        FROM mart.daily
        GROUP BY 1
    """,
}


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


async def sync(runtime: Runtime, folder: Path, *, prune: bool = False, dry_run: bool = False) -> Report:
    """The whole of ``maestro apply`` but click: read, plan, execute."""
    specs = read_folder(folder, default_project=runtime.settings.project)
    the_plan = plan(specs, await load_rows(runtime.catalog), prune)
    return await execute(the_plan, runtime.catalog, ACTOR, dry_run=dry_run)


async def event_count(runtime: Runtime) -> int:
    """The catalog's events (the crm database's registration is not one)."""
    return await runtime.pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'table-%'")


async def live_specs(runtime: Runtime) -> dict[str, dict]:
    rows = await load_rows(runtime.catalog)
    return {
        f"{s['dataset']}.{s['name']}": s
        for s in (canonical_payload(r["spec"]) for r in rows if not r["deleted"])
    }


async def test_apply_creates_the_catalog_from_a_folder(runtime: Runtime, tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", SAMPLE)
    report = await sync(runtime, folder)

    assert sorted(report.created) == ["crm.accounts", "mart.daily", "mart.weekly", "raw.events", "stg.orders"]
    assert report.events == 5 and report.summary().startswith("applied: 5 created, 0 updated, 0 deleted")
    specs = await live_specs(runtime)
    daily = specs["mart.daily"]
    assert daily["query"].startswith("WITH o AS (SELECT * FROM stg.orders)\n")  # blank line dropped
    assert daily["query"].endswith("GROUP BY 1, 2")
    assert daily["description"] == "Revenue per day and country.\nSecond line.\n"
    assert daily["partitioning"] == {"type": "column", "column": "day", "granularity": "DAY"}
    assert daily["labels"] == {"team": "growth", "tier": "gold"}
    assert specs["crm.accounts"]["import"]["id_column"] == "id"
    external = specs["raw.events"]["external"]
    assert (external["format"], external["wait_timeout"], external["delete_after_load"]) == ("ndjson", 600, True)
    # Every event is a normal, attributed catalog event; dependencies resolved whatever the order.
    actors = await runtime.pool.fetch(
        "SELECT DISTINCT type, metadata->>'actor' AS actor FROM events WHERE stream_id LIKE 'table-%'"
    )
    assert {(r["type"], r["actor"]) for r in actors} == {("TableCreated", "cli:tester")}
    ids = report.created
    deps = runtime.catalog.dependencies(ids["mart.daily"])
    assert deps["parents"] == sorted([ids["stg.orders"], ids["crm.accounts"]])
    assert runtime.catalog.dependencies(ids["mart.weekly"])["parents"] == [ids["mart.daily"]]
    assert runtime.catalog.dependencies(ids["stg.orders"])["parents"] == [ids["raw.events"]]


async def test_applying_the_same_folder_twice_appends_nothing(runtime: Runtime, tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", SAMPLE)
    await sync(runtime, folder)
    before = await event_count(runtime)

    report = await sync(runtime, folder, prune=True)

    assert not report.plan.has_changes and report.plan.unchanged == 5
    assert await event_count(runtime) == before
    # Trailing blank lines and CRLF line endings are not changes either.
    weekly = folder / "mart/weekly.sql"
    weekly.write_bytes(weekly.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n  \r\n")
    assert not (await sync(runtime, folder)).plan.has_changes
    assert await event_count(runtime) == before


async def test_changing_one_file_is_one_update_with_its_fields(runtime: Runtime, tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", SAMPLE)
    created = (await sync(runtime, folder)).created
    before = await event_count(runtime)
    write(folder, {"mart/weekly.sql": """
        /*---
        labels: {team: growth}
        ---*/
        SELECT DATE_TRUNC(day, WEEK) AS week, SUM(revenue) AS revenue
        FROM mart.daily JOIN stg.orders USING (day)
        GROUP BY 1
    """})

    report = await sync(runtime, folder)

    assert [(c.label, c.fields) for c in report.plan.updates] == [("mart.weekly", ("query", "labels"))]
    assert not report.plan.creates and not report.plan.deletes and report.plan.unchanged == 4
    assert [c.describe() for c in report.plan.changes] == ["~ update mart.weekly (query, labels)"]
    assert report.updated == ["mart.weekly"]
    rows = await runtime.pool.fetch(
        "SELECT stream_id, type FROM events WHERE stream_id LIKE 'table-%' ORDER BY position OFFSET $1", before
    )
    weekly = created["mart.weekly"]
    assert [(r["stream_id"], r["type"]) for r in rows] == [
        (f"table-{weekly}", "TableQueryChanged"), (f"table-{weekly}", "TableSettingsChanged"),
    ]
    view = await runtime.catalog.get_table(weekly)
    assert view.version == 3 and view.spec["labels"] == {"team": "growth"}
    assert runtime.catalog.dependencies(weekly)["parents"] == sorted([created["mart.daily"], created["stg.orders"]])


async def test_a_deleted_file_deletes_only_with_prune(runtime: Runtime, tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", SAMPLE)
    created = (await sync(runtime, folder)).created
    (folder / "mart/weekly.sql").unlink()
    before = await event_count(runtime)

    kept = await sync(runtime, folder)
    assert kept.plan.kept == ("mart.weekly",) and not kept.plan.has_changes
    assert await event_count(runtime) == before
    assert not (await runtime.catalog.get_table(created["mart.weekly"])).deleted

    pruned = await sync(runtime, folder, prune=True)
    assert [c.describe() for c in pruned.plan.changes] == ["- delete mart.weekly"]
    assert pruned.deleted == ["mart.weekly"] and await event_count(runtime) == before + 1
    assert (await runtime.catalog.get_table(created["mart.weekly"])).deleted
    assert created["mart.weekly"] not in runtime.catalog.deps.entries
    # Bringing the file back creates a new table under the name.
    write(folder, {"mart/weekly.sql": SAMPLE["mart/weekly.sql"]})
    again = await sync(runtime, folder)
    assert list(again.created) == ["mart.weekly"] and again.created["mart.weekly"] != created["mart.weekly"]


async def test_dry_run_reports_the_plan_and_appends_nothing(runtime: Runtime, tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", SAMPLE)
    report = await sync(runtime, folder, dry_run=True)

    assert report.dry_run and not report.created
    assert [c.describe() for c in report.plan.changes] == [
        "+ create crm.accounts", "+ create mart.daily", "+ create mart.weekly", "+ create raw.events",
        "+ create stg.orders",
    ]
    assert report.summary() == "plan: 5 to create, 0 to update, 0 to delete, 0 unchanged"
    assert await event_count(runtime) == 0
    assert runtime.catalog.deps.entries == {}


async def test_a_bad_sql_file_is_named_with_line_and_column_and_nothing_applies(
    runtime: Runtime, tmp_path: Path
) -> None:
    folder = write(tmp_path / "repo", {**SAMPLE, "mart/broken.sql": """
        /*---
        description: header lines count
        ---*/

        SELECT a,
          b FROM mart.daily WHERE (a = 1
    """})

    with pytest.raises(FolderInvalid) as caught:
        await sync(runtime, folder)

    [problem] = caught.value.problems
    assert problem.path == str(folder / "mart/broken.sql")
    assert (problem.line, problem.column) == (6, 32)  # the file's line, not the query's
    assert str(problem) == f"{folder / 'mart/broken.sql'}:6:32: Expecting )"
    assert "1 problem in" in caught.value.message and "nothing was applied" in caught.value.message
    assert await event_count(runtime) == 0


def test_every_bad_file_is_reported_with_its_path(tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", {
        "mart/both.sql": "/*---\nlabels: {a: b}\n---*/\nSELECT 1\n",
        "mart/both.yaml": "description: x\n",
        "mart/moved.sql": "/*---\ndataset: other\n---*/\nSELECT 1\n",
        "mart/unknown.sql": "/*---\ndescription: ok\ncolour: blue\n---*/\nSELECT 1\n",
        "mart/badyaml.sql": "/*---\nlabels: [a\n---*/\nSELECT 1\n",
        "mart/unclosed.sql": "/*---\nlabels: {a: b}\nSELECT 1\n",
        "mart/noquery.yaml": "description: a summary without SQL\n",
        "mart/notes.txt": "hello\n",
        "mart/side.yml": "kind: import\n",
        "bad-dataset/t.sql": "SELECT 1\n",
        "mart/fine.sql": "SELECT 1\n",
        "README.md": "top-level files are ignored\n",
        ".git/config": "hidden entries are ignored\n",
    })

    with pytest.raises(FolderInvalid) as caught:
        read_folder(folder)

    found = {(Path(p.path).relative_to(folder).as_posix(), p.line): p.message for p in caught.value.problems}
    assert set(found) == {
        ("bad-dataset/t.sql", None), ("mart/badyaml.sql", 3), ("mart/both.sql", 1),
        ("mart/moved.sql", 2), ("mart/noquery.yaml", None), ("mart/notes.txt", None),
        ("mart/side.yml", None), ("mart/unclosed.sql", 1), ("mart/unknown.sql", 3),
    }
    assert found[("mart/unknown.sql", 3)] == "colour: unknown field"
    assert "both in this header and in both.yaml" in found[("mart/both.sql", 1)]
    assert found[("mart/moved.sql", 2)] == "dataset is 'other' here but 'mart' by the path"
    assert found[("bad-dataset/t.sql", None)].startswith("dataset: ")


async def test_a_cycle_across_two_new_files_is_refused_with_its_path(runtime: Runtime, tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", {
        **SAMPLE,
        "loop/a.sql": "SELECT * FROM loop.b\n",
        "loop/b.sql": "SELECT * FROM `loop.a`\n",
    })

    with pytest.raises(CycleDetected) as caught:
        await sync(runtime, folder)
    assert caught.value.path == ["loop.a", "loop.b", "loop.a"]
    assert await event_count(runtime) == 0

    # The same refusal in a dry run; and a cycle through an existing table is caught too.
    (folder / "loop/b.sql").write_text("SELECT 1 AS x\n")
    await sync(runtime, folder)
    (folder / "loop/b.sql").write_text("SELECT * FROM loop.a\n")
    before = await event_count(runtime)
    with pytest.raises(CycleDetected):
        await sync(runtime, folder, dry_run=True)
    assert await event_count(runtime) == before


async def test_export_then_apply_is_a_no_op(runtime: Runtime, tmp_path: Path) -> None:
    await sync(runtime, write(tmp_path / "repo", SAMPLE))
    # Tables made elsewhere (the API): untidy whitespace, a query that looks like a header, a
    # description that would end a header comment early.
    await runtime.catalog.create_table(
        TableSpec(dataset="api", name="untidy", query="\n\nSELECT 1  \r\n\n  "), ACTOR
    )
    await runtime.catalog.create_table(
        TableSpec(dataset="api", name="tricky", query="/*---\nnot a header\n---*/\nSELECT 2"), ACTOR
    )
    await runtime.catalog.create_table(
        TableSpec(dataset="api", name="closer", query="SELECT 3", description="ends a */ comment"),
        ACTOR,
    )
    out = tmp_path / "exported"
    result = export(await load_rows(runtime.catalog), out)
    assert result.removed == [] and len(result.written) == 9  # closer has a sidecar
    assert (out / "api/untidy.sql").read_text() == "SELECT 1\n"
    assert (out / "api/tricky.sql").read_text().startswith("/*---\n---*/\n/*---\nnot a header")
    assert (out / "api/closer.yaml").read_text() == "description: ends a */ comment\n"
    assert (out / "api/closer.sql").read_text() == "SELECT 3\n"
    assert (out / "mart/weekly.sql").read_text() == textwrap.dedent(SAMPLE["mart/weekly.sql"]).lstrip()
    before = await event_count(runtime)

    report = await sync(runtime, out, prune=True)

    assert not report.plan.has_changes and report.plan.unchanged == 8
    assert await event_count(runtime) == before
    # Deterministic: a second export rewrites nothing; a stale table file is removed.
    (out / "mart/gone.sql").write_text("SELECT 1\n")
    (out / "mart/notes.md").write_text("kept\n")
    again = export(await load_rows(runtime.catalog), out)
    assert again.written == [] and again.unchanged == 9 and again.removed == [str(out / "mart/gone.sql")]
    assert (out / "mart/notes.md").exists()


async def test_export_then_apply_into_a_fresh_database_reproduces_the_catalog(
    runtime: Runtime, tmp_path: Path, fresh_database: tuple[str, str]
) -> None:
    await sync(runtime, write(tmp_path / "repo", SAMPLE))
    await google_credentials(runtime)
    assert runtime.config_service is not None  # a database export's target must be registered for export
    await runtime.config_service.add_database("warehouse", {**CRM, "export": True}, ACTOR)
    await runtime.catalog.create_table(
        TableSpec.model_validate({
            "dataset": "exports", "name": "everything", "query": "SELECT * FROM mart.daily",
            "project": "other-project", "write_disposition": "append", "frequency_id": "f1",
            "conditions": [{"weekdays": [1, 2], "hours": [4]}], "timezone": "Europe/Paris",
            "group_id": "g1", "owner_id": "u1", "maximum_bytes_billed": 10**9,
            "extract": {"format": "parquet", "compression": "snappy", "notify_url": "https://x.test"},
            "sheets_export": {"sheet_id": "s1"}, "db_export": {"database": "warehouse"},
        }),
        ACTOR,
    )
    await runtime.catalog.create_table(
        TableSpec(dataset="exports", name="legacy", query="SELECT * FROM [mart.daily]", legacy_sql=True),
        ACTOR,
    )
    out = tmp_path / "exported"
    export(await load_rows(runtime.catalog), out)

    second = await open_runtime(
        Settings(database_url=fresh_database[0], data_dir=tmp_path / "data2"), follow=False
    )
    try:
        await register_crm(second)
        await google_credentials(second)
        report = await sync(second, out)
        assert len(report.created) == 7
        assert await live_specs(second) == await live_specs(runtime)
        assert (await live_specs(second))["exports.everything"]["extract"]["notify_url"] == "https://x.test/"
        labels = {table_id: label for label, table_id in report.created.items()}
        assert len(second.catalog.deps.graph.edges()) == len(runtime.catalog.deps.graph.edges()) == 6
        legacy = report.created["exports.legacy"]
        assert {labels[t] for t in second.catalog.dependencies(legacy)["parents"]} == {"mart.daily"}
    finally:
        await second.close()


def test_the_cli_commands(dsn: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "repo", SAMPLE)
    cli = CliRunner()
    base = ["--database-url", dsn, "--data-dir", str(tmp_path / "data")]

    async def register() -> None:
        registry = await open_runtime(Settings(database_url=dsn, data_dir=tmp_path / "data"), follow=False)
        try:
            await register_crm(registry)
        finally:
            await registry.close()

    asyncio.run(register())

    dry = cli.invoke(apply_command, [str(folder), *base, "--dry-run", "--detailed-exitcode"])
    assert dry.exit_code == 3, dry.output
    assert "+ create mart.daily\n" in dry.stdout
    assert dry.stdout.rstrip().endswith("plan: 5 to create, 0 to update, 0 to delete, 0 unchanged")

    done = cli.invoke(apply_command, [str(folder), *base, "--actor", "cli:ci"])
    assert done.exit_code == 0, done.output
    assert "applied: 5 created, 0 updated, 0 deleted, 0 unchanged" in done.stdout
    assert "warning: crm.accounts: saved without checking the source" in done.stderr

    (folder / "mart/weekly.sql").unlink()
    same = cli.invoke(apply_command, [str(folder), *base, "--dry-run", "--detailed-exitcode"])
    assert same.exit_code == 0, same.output
    assert "1 live table(s) not in" in same.stdout

    out = tmp_path / "exported"
    exported = cli.invoke(export_command, [str(out), *base])
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.strip() == "exported: 5 files written, 0 unchanged, 0 stale removed"
    assert (out / "mart/weekly.sql").exists()

    (folder / "mart/daily.sql").write_text("SELECT FROM WHERE\n")
    bad = cli.invoke(apply_command, [str(folder), *base])
    assert bad.exit_code == 2
    assert f"{folder / 'mart/daily.sql'}:1:" in bad.stderr and "nothing was applied" in bad.stderr


def test_export_refuses_a_folder_that_is_not_an_export(dsn: str, tmp_path: Path) -> None:
    """Before: ``maestro export ~/project`` deleted every ``*/*.sql`` and ``*/*.yaml`` under it."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src/schema.sql").write_text("CREATE TABLE precious (id int);\n")
    (project / "src/config.yaml").write_text("keep: me\n")
    (project / "README.md").write_text("mine\n")
    table = TableSpec(dataset="mart", name="daily", query="SELECT 1")

    with pytest.raises(ExportRefused, match="not a previous export"):
        export([table], project)
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == [
        "README.md", "src", "src/config.yaml", "src/schema.sql"
    ]

    cli = CliRunner()
    refused = cli.invoke(export_command, [str(project), "--database-url", dsn, "--data-dir", str(tmp_path / "d")])
    assert refused.exit_code == 2, refused.output
    assert "is not a previous export" in refused.stderr and "nothing was changed" in refused.stderr
    assert (project / "src/schema.sql").exists() and (project / "src/config.yaml").exists()


def test_export_writes_into_new_empty_or_previously_exported_folders(tmp_path: Path) -> None:
    table = TableSpec(dataset="mart", name="daily", query="SELECT 1")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)  # a fresh `git init`: hidden entries alone count as empty
    export([table], repo)
    assert (repo / EXPORT_MARKER).is_file() and (repo / "mart/daily.sql").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    export([table], empty)
    export([table], tmp_path / "new/nested")
    assert (tmp_path / "new/nested/mart/daily.sql").exists()

    # A previous export (it has the marker) is mirrored again: stale table files go.
    (repo / "mart/stale.sql").write_text("SELECT 2\n")
    again = export([table], repo)
    assert again.removed == [str(repo / "mart/stale.sql")] and again.written == []
    assert read_folder(repo) == [table]  # the marker is not read as a table
    with pytest.raises(ExportRefused, match="not a directory"):
        export([table], repo / "mart/daily.sql")

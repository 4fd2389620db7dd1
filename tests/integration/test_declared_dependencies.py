"""``depends_on`` and ``not_dependencies``: dependencies the SQL does not show, and references it
shows that must not order runs (incremental state split over two tables), through the API, the
run planner, history, the graph and ``maestro apply`` / ``maestro export``."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from maestro.cli_catalog import apply_command
from maestro.errors import CycleDetected
from maestro.events.catalog import TableSpec
from maestro.events.model import Metadata
from maestro.handlers.catalog.folder import export, read_folder
from test_apply import sync, write

ACTOR = Metadata(actor="system:tests")

# The incremental pair from a real catalog: ``state`` keeps what was seen so far, ``daily``
# reads the previous state to compute the new rows, ``state`` is rebuilt from ``daily``.
DAILY = "SELECT * FROM raw.hits WHERE id NOT IN (SELECT id FROM mart.state)"
STATE = "SELECT id FROM mart.daily UNION ALL SELECT id FROM mart.state"


async def _count_events(runtime) -> int:
    return await runtime.pool.fetchval("SELECT count(*) FROM events")


async def _create(client, dataset: str, name: str, query: str, status: int = 201, **extra) -> dict:
    resp = await client.post("/api/v1/tables", json={"dataset": dataset, "name": name, "query": query, **extra})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_not_dependencies_break_an_incremental_pair_and_stay_visible(client, runtime) -> None:
    raw = await _create(client, "raw", "hits", "SELECT 1 AS id")
    daily = await _create(client, "mart", "daily", DAILY)
    before = await _count_events(runtime)
    refused = (await _create(client, "mart", "state", STATE, status=409))["error"]
    assert refused["code"] == "cycle_detected"
    assert refused["details"]["path"] == ["mart.state", "mart.daily", "mart.state"]
    assert "mart.state -> mart.daily -> mart.state" in refused["message"]
    assert "add mart.daily to the not_dependencies of mart.state" in refused["message"]
    assert await _count_events(runtime) == before

    # daily only reads the previous state: it must not wait for (nor be waited on by) state.
    resp = await client.patch(f"/api/v1/tables/{daily['id']}", json={"not_dependencies": ["mart.state"]})
    assert resp.status == 200, await resp.text()
    state = await _create(client, "mart", "state", STATE)
    assert state["dependencies"]["parents"] == [daily["id"]]

    body = await (await client.get(f"/api/v1/tables/{daily['id']}/parents")).json()
    assert [(p["name"], p["kind"]) for p in body["parents"]] == [("hits", "inferred")]
    assert [(r["name"], r["kind"]) for r in body["references"]] == [("state", "not_dependency"), ("hits", "inferred")]
    graph = await (await client.get("/api/v1/graph")).json()
    assert {(e["parent"], e["child"], e["kind"]) for e in graph["edges"]} == {
        (raw["id"], daily["id"], "inferred"), (daily["id"], state["id"], "inferred"),
    }
    assert graph["ignored_edges"] == [{"parent": state["id"], "child": daily["id"], "kind": "not_dependency"}]
    # Lineage still sees the columns of the table the SQL reads.
    resp = await client.get(f"/api/v1/tables/{daily['id']}/lineage", params={"column": "id"})
    assert resp.status == 200

    # History records the change like any setting.
    versions = (await (await client.get(f"/api/v1/tables/{daily['id']}/history")).json())["versions"]
    assert versions[-1]["changes"] == {"not_dependencies": {"from": [], "to": ["mart.state"]}}


async def test_declared_dependencies_that_do_not_hold_are_a_400(client, runtime) -> None:
    await _create(client, "raw", "hits", "SELECT 1 AS id")
    before = await _count_events(runtime)
    for extra, field, name in [
        ({"not_dependencies": ["raw.other"]}, "not_dependencies", "maestro-local.raw.other"),
        ({"depends_on": ["raw.nowhere"]}, "depends_on", "maestro-local.raw.nowhere"),
        ({"depends_on": ["other-project.raw.hits"]}, "depends_on", "other-project.raw.hits"),
    ]:
        resp = await client.post("/api/v1/tables", json={"dataset": "m", "name": "t", "query": "SELECT * FROM raw.hits", **extra})
        assert resp.status == 400, (extra, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_dependency" and field in error["message"] and name in error["message"]
        assert error["details"]["names"] == [name]
    for bad in (["nodot"], ["a.b.c.d"], ["raw.hits", "raw.hits"]):
        resp = await client.post("/api/v1/tables", json={"dataset": "m", "name": "t", "query": "SELECT 1", "depends_on": bad})
        assert resp.status == 422, bad
    resp = await client.post("/api/v1/tables", json={"dataset": "m", "name": "t", "query": "SELECT * FROM raw.hits",
                                                     "depends_on": ["raw.hits"], "not_dependencies": ["raw.hits"]})
    assert resp.status == 422 and "both" in (await resp.json())["error"]["message"]
    assert await _count_events(runtime) == before
    # The project is resolved as a reference's: written out, it names the same table.
    await _create(client, "m", "t", "SELECT * FROM raw.hits", not_dependencies=["Maestro-Local.raw.hits"])


async def test_depends_on_orders_runs_like_an_inferred_edge(client, runtime) -> None:
    load = await _create(client, "raw", "load", "SELECT 1 AS x")  # fills a table out of band
    report = await _create(client, "mart", "report", "SELECT 2 AS y", depends_on=["raw.load"])
    assert report["dependencies"]["parents"] == [load["id"]]
    body = await (await client.get(f"/api/v1/tables/{report['id']}/parents")).json()
    assert [(p["id"], p["kind"]) for p in body["parents"]] == [(load["id"], "depends_on")]
    graph = await (await client.get("/api/v1/graph")).json()
    assert graph["edges"] == [{"parent": load["id"], "child": report["id"], "kind": "depends_on"}]
    assert graph["generations"] == [[load["id"]], [report["id"]]]

    run_id = await runtime.runs.plan_table(load["id"], descendants=True, actor=ACTOR)
    planned = (await runtime.store.read(f"run-{run_id}"))[0].event
    parents = {t.table_id: t.parents for t in planned.tables}
    assert parents == {load["id"]: [], report["id"]: [load["id"]]}
    assert {t.table_id: t.priority for t in planned.tables}[load["id"]] == 1

    # A depends_on that closes a loop is a cycle too; the advice names depends_on.
    resp = await client.patch(f"/api/v1/tables/{load['id']}", json={"depends_on": ["mart.report"]})
    assert resp.status == 409
    assert "mart.report" in (await resp.json())["error"]["message"]
    resp = await client.patch(f"/api/v1/tables/{load['id']}", json={"query": "SELECT * FROM mart.report"})
    assert resp.status == 409
    assert "raw.load lists" not in (await resp.json())["error"]["message"]
    # A table named by a depends_on, created later, is adopted like a reader's parent.
    later = await _create(client, "mart", "later", "SELECT 3 AS z", depends_on=["raw.load"])
    assert later["dependencies"]["parents"] == [load["id"]]


async def test_old_specs_gain_the_fields_without_recorded_changes(runtime) -> None:
    """A table stored before these fields existed: re-saving records nothing about them, and
    restoring such a version drops a ``depends_on`` added since."""
    base = await runtime.catalog.create_table(TableSpec(dataset="raw", name="a", query="SELECT 1 AS x"), ACTOR)
    view = await runtime.catalog.create_table(TableSpec(dataset="m", name="b", query="SELECT 1 AS x"), ACTOR)
    # Rewrite the read model as an older release left it (the log itself is never rewritten).
    spec = {k: v for k, v in view.spec.items() if k not in ("depends_on", "not_dependencies")}
    await runtime.pool.execute(
        "UPDATE catalog_tables SET spec = $2::jsonb WHERE table_id = $1", view.table_id, orjson.dumps(spec).decode()
    )
    changed = await runtime.catalog.update_table(view.table_id, {"description": "d"}, ACTOR)
    last = (await runtime.store.read(f"table-{view.table_id}"))[-1].event
    assert last.changes == {"description": "d"}
    await runtime.catalog.update_table(view.table_id, {"depends_on": ["raw.a"]}, ACTOR)
    assert runtime.catalog.dependencies(view.table_id)["parents"] == [base.table_id]
    restored = await runtime.catalog.restore_table(view.table_id, ACTOR, version=changed.version)
    assert restored.spec["depends_on"] == [] and runtime.catalog.dependencies(view.table_id)["parents"] == []


async def test_apply_takes_them_from_the_header_and_export_round_trips(runtime, tmp_path) -> None:
    files = {
        "raw/hits.sql": "SELECT 1 AS id\n",
        "mart/daily.sql": f"/*---\nnot_dependencies: [mart.state]\n---*/\n{DAILY}\n",
        "mart/state.sql": f"{STATE}\n",
        # depends_on a table the same folder creates
        "mart/report.sql": "/*---\ndepends_on:\n- mart.state\n---*/\nSELECT 2 AS y\n",
    }
    folder = write(tmp_path / "repo", files)
    report = await sync(runtime, folder)
    assert len(report.created) == 4
    ids = report.created
    deps = runtime.catalog.deps
    assert deps.graph.parents(ids["mart.report"]) == {ids["mart.state"]}
    assert deps.graph.parents(ids["mart.daily"]) == {ids["raw.hits"]}

    out = tmp_path / "exported"
    export(await _rows(runtime), out)
    assert "not_dependencies:\n- mart.state\n" in (out / "mart/daily.sql").read_text()
    assert "depends_on:\n- mart.state\n" in (out / "mart/report.sql").read_text()
    assert read_folder(out) == read_folder(folder)
    assert (await sync(runtime, out)).plan.has_changes is False


CYCLES = {
    "raw/hits.sql": "SELECT 1 AS id\n",
    "a/daily.sql": "SELECT * FROM raw.hits JOIN a.state USING (id)\n",
    "a/state.sql": "SELECT * FROM a.daily\n",
    "b/x.sql": "SELECT * FROM b.y\n",
    "b/y.sql": "/*---\ndepends_on: [b.x]\n---*/\nSELECT 1 AS y\n",
}


async def test_apply_reports_every_cycle_of_a_folder_in_one_pass(runtime, tmp_path) -> None:
    folder = write(tmp_path / "repo", CYCLES)
    with pytest.raises(CycleDetected) as caught:
        await sync(runtime, folder)
    error = caught.value
    assert error.cycles == [["a.daily", "a.state", "a.daily"], ["b.x", "b.y", "b.x"]]
    assert error.path == error.cycles[0]
    assert error.advice == [
        "if a.daily reads the previous state of a.state on purpose, add a.state to the not_dependencies of a.daily",
        "if b.x reads the previous state of b.y on purpose, add b.y to the not_dependencies of b.x",
    ]
    assert await _count_events(runtime) == 0



def test_the_cli_prints_every_cycle_and_the_advice_works(dsn: str, tmp_path) -> None:
    folder = write(tmp_path / "repo", CYCLES)
    cli = CliRunner()
    base = ["--database-url", dsn, "--data-dir", str(tmp_path / "data")]
    result = cli.invoke(apply_command, [str(folder), *base])
    assert result.exit_code == 2
    assert "2 dependency cycles: a.daily -> a.state -> a.daily; b.x -> b.y -> b.x" in result.stderr
    assert "add b.y to the not_dependencies of b.x" in result.stderr
    (folder / "a/daily.sql").write_text("/*---\nnot_dependencies: [a.state]\n---*/\n"
                                         "SELECT * FROM raw.hits JOIN a.state USING (id)\n")
    (folder / "b/x.sql").write_text("/*---\nnot_dependencies: [b.y]\n---*/\nSELECT * FROM b.y\n")
    result = cli.invoke(apply_command, [str(folder), *base])
    assert result.exit_code == 0, result.output


async def test_apply_refuses_a_depends_on_on_an_unknown_table(runtime, tmp_path) -> None:
    folder = write(tmp_path / "repo", {"m/t.sql": "/*---\ndepends_on: [m.gone]\n---*/\nSELECT 1 AS x\n"})
    with pytest.raises(Exception) as caught:
        await sync(runtime, folder)
    assert getattr(caught.value, "code", None) == "invalid_dependency"
    assert "m.t: depends_on names no table of the catalog: maestro-local.m.gone" in str(caught.value)
    assert await _count_events(runtime) == 0


async def _rows(runtime):
    from maestro.handlers.catalog.apply import load_rows

    return await load_rows(runtime.catalog)

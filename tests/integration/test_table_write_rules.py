"""What a member's table write may change: a restore is checked as the change it makes, and a
table may only write to allowed projects and to datasets of its own group (docs/auth.md)."""

from __future__ import annotations

from people import TESTS, bearer, user_token

from maestro.events.catalog import TableSpec
from test_apply import sync, write


async def _events(runtime) -> list[str]:
    await runtime.audit.flush()  # refusals are counted per minute, appended on flush
    return [r["type"] for r in await runtime.pool.fetch("SELECT type FROM events ORDER BY position")]


async def _world(runtime):
    mine = await runtime.users.create_group("analysts", TESTS)
    theirs = await runtime.users.create_group("finance", TESTS)
    mia = bearer(await user_token(runtime, "mia", groups=(mine.group_id,)))
    return mine.group_id, theirs.group_id, mia


async def test_restoring_an_old_version_is_checked_as_the_change_it_makes(client, anon_client, runtime) -> None:
    mine, theirs, mia = await _world(runtime)
    # Version 1 was the finance group's and billed to bob; an administrator gave it to mia's group.
    view = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name="t", query="SELECT 1 AS x", group_id=theirs, owner_id="bob"), TESTS
    )
    url = f"/api/v1/tables/{view.table_id}"
    assert (await client.patch(url, json={"group_id": mine, "owner_id": "mia"})).status == 200
    assert (await anon_client.patch(url, headers=mia, json={"description": "v3"})).status == 200

    before = await _events(runtime)
    resp = await anon_client.post(f"{url}/restore", headers=mia, json={"version": 1})
    assert resp.status == 403, await resp.text()
    error = (await resp.json())["error"]
    assert error["details"] == {"rule": "write"}
    assert f"restoring version 1: you are not a member of group {theirs!r}" in error["message"]
    assert await _events(runtime) == [*before, "AccessDenied"]
    table = (await runtime.catalog.get_table(view.table_id)).spec
    assert (table["group_id"], table["owner_id"]) == (mine, "mia")

    # Same group, someone else as owner: billing someone else is refused too.
    assert (await client.patch(url, json={"owner_id": "bob"})).status == 200  # version 4
    assert (await client.patch(url, json={"owner_id": "mia"})).status == 200  # version 5
    resp = await anon_client.post(f"{url}/restore", headers=mia, json={"version": 4})
    assert resp.status == 403 and "someone else" in (await resp.json())["error"]["message"]

    # A restore that changes neither (an older description) is an ordinary edit; so is undelete.
    resp = await anon_client.post(f"{url}/restore", headers=mia, json={"version": 2})
    assert resp.status == 200 and (await resp.json())["description"] == ""
    assert (await anon_client.delete(url, headers=mia)).status == 200
    assert (await anon_client.post(f"{url}/restore", headers=mia, json={})).status == 200
    resp = await anon_client.post(f"{url}/restore", headers=mia, json={"version": 99})
    assert resp.status == 404
    # Administrators may restore anything.
    resp = await client.post(f"{url}/restore", json={"version": 1})
    assert resp.status == 200 and (await resp.json())["group_id"] == theirs


async def test_members_write_only_to_allowed_projects(client, anon_client, runtime) -> None:
    _, _, mia = await _world(runtime)
    table = {"dataset": "ds", "query": "SELECT 1 AS x"}
    resp = await anon_client.post("/api/v1/tables", headers=mia, json={**table, "name": "a", "project": "elsewhere-1"})
    assert resp.status == 403, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "project_not_allowed" and "'elsewhere-1'" in error["message"]
    assert "maestro-local" in error["message"]
    # The configured project (named or not) is always allowed.
    resp = await anon_client.post("/api/v1/tables", headers=mia, json={**table, "name": "a", "project": "maestro-local"})
    assert resp.status == 201
    own = await resp.json()
    resp = await anon_client.patch(f"/api/v1/tables/{own['id']}", headers=mia, json={"project": "elsewhere-1"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "project_not_allowed"

    # Live configuration: the next request sees the list.
    resp = await client.put("/api/v1/config/bigquery", json={"allowed_projects": ["elsewhere-1"]})
    assert resp.status == 200, await resp.text()
    resp = await anon_client.patch(f"/api/v1/tables/{own['id']}", headers=mia, json={"project": "elsewhere-1"})
    assert resp.status == 200
    resp = await anon_client.post("/api/v1/tables", headers=mia, json={**table, "name": "b", "project": "elsewhere-2"})
    assert resp.status == 403
    # Administrators may do anything.
    resp = await client.post("/api/v1/tables", json={**table, "name": "b", "project": "elsewhere-2"})
    assert resp.status == 201


async def test_a_dataset_of_another_group_is_not_writable_by_its_members(client, anon_client, runtime) -> None:
    mine, theirs, mia = await _world(runtime)
    await runtime.catalog.create_table(TableSpec(dataset="fin", name="ledger", query="SELECT 1 AS x", group_id=theirs), TESTS)
    before = await _events(runtime)
    # No owner, but it holds finance's tables: it is finance's.
    resp = await anon_client.post("/api/v1/tables", headers=mia, json={"dataset": "fin", "name": "mine", "query": "SELECT 1"})
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert error["code"] == "dataset_of_another_group" and "'fin'" in error["message"]
    assert await _events(runtime) == [*before, "AccessDenied"]
    resp = await anon_client.post("/api/v1/tables", headers=mia, json={"dataset": "ana", "name": "t", "query": "SELECT 1"})
    assert resp.status == 201
    url = f"/api/v1/tables/{(await resp.json())['id']}"
    resp = await anon_client.patch(url, headers=mia, json={"dataset": "fin"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "dataset_of_another_group"
    resp = await anon_client.put(url, headers=mia, json={"dataset": "fin", "name": "t", "query": "SELECT 2"})
    assert resp.status == 403

    # An administrator gives the (so far mia's) dataset to finance: mia's table may no longer
    # change there, and a restore cannot bring a table back into it either.
    resp = await anon_client.put("/api/v1/datasets/ana/owner", headers=mia, json={"group_id": theirs})
    assert resp.status == 403 and (await resp.json())["error"]["details"]["rule"] == "admin"
    assert (await client.put("/api/v1/datasets/ana/owner", json={"group_id": "nope"})).status == 422
    resp = await client.put("/api/v1/datasets/ana/owner", json={"group_id": theirs})
    assert resp.status == 200 and (await resp.json())["owner_group"] == theirs
    resp = await anon_client.patch(url, headers=mia, json={"description": "still mine?"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "dataset_of_another_group"
    resp = await anon_client.patch(url, headers=mia, json={"dataset": "ana2"})
    assert resp.status == 200  # moving out of it is fine
    resp = await anon_client.post(f"{url}/restore", headers=mia, json={"version": 1})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "dataset_of_another_group"
    datasets = {d["dataset"]: d for d in (await (await client.get("/api/v1/datasets")).json())["datasets"]}
    assert datasets["ana"]["owner_group"] == theirs and datasets["fin"]["owner_group"] is None
    assert datasets["fin"]["table_groups"] == [theirs] and datasets["ana2"]["table_groups"] == [mine]

    # Given to mia's group, finance's tables stay where they are but mia may write there now.
    assert (await client.put("/api/v1/datasets/fin/owner", json={"group_id": mine})).status == 200
    resp = await anon_client.patch(url, headers=mia, json={"dataset": "fin"})
    assert resp.status == 200
    # Administrators may do anything; and the ownership is rebuilt from the log.
    assert (await client.post("/api/v1/tables", json={"dataset": "ana", "name": "x", "query": "SELECT 1",
                                                      "group_id": mine})).status == 201
    await runtime.projections.rebuild("catalog")
    owners = dict(await runtime.pool.fetch("SELECT dataset, owner_group FROM catalog_datasets ORDER BY dataset"))
    assert owners == {"ana": theirs, "fin": mine}


async def test_maestro_apply_is_not_a_member_and_is_unaffected(runtime, tmp_path) -> None:
    mine, theirs, _ = await _world(runtime)
    await runtime.catalog.create_table(TableSpec(dataset="fin", name="ledger", query="SELECT 1 AS x", group_id=theirs), TESTS)
    folder = write(tmp_path / "repo", {"fin/mine.sql": f"/*---\ngroup_id: {mine}\nproject: elsewhere-9\n---*/\nSELECT 1 AS x\n"})
    report = await sync(runtime, folder)
    assert list(report.created) == ["fin.mine"]

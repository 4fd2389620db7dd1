"""Inbound (mode sync): what people push is applied as `maestro apply` would; bad commits are refused whole."""

from __future__ import annotations

from pathlib import Path

from git_repos import Person, bare, log, show
from git_setup import ADMIN, configure, person, settled, spec, worker

from maestro.events.git import git_stream
from maestro.handlers.git.sync import GitSync, repo_key
from maestro.runtime import Runtime

HEADER = "/*---\ndescription: {description}\n---*/\n{query}\n"


async def _sync_repo(runtime: Runtime, tmp_path: Path) -> tuple[str, GitSync, Person]:
    url = bare(tmp_path / "remote.git")
    await configure(runtime, url, mode="sync")
    sync = worker(runtime, tmp_path / "data")
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    await runtime.catalog.create_table(spec("orders", "SELECT 1 AS id"), ana)
    await runtime.catalog.create_table(spec("old", "SELECT 2 AS id"), ana)
    await settled(sync)
    return url, sync, Person(url, tmp_path / "ana", "Ana Lima", "ana@example.com")


async def _git_events(runtime: Runtime, url: str, branch: str = "main") -> list:
    return await runtime.store.read(git_stream(repo_key(url, branch, "")))


async def _live(runtime: Runtime) -> dict[str, dict]:
    rows = await runtime.pool.fetch("SELECT dataset || '.' || name AS n, spec FROM catalog_tables WHERE NOT deleted")
    import orjson

    return {r["n"]: orjson.loads(r["spec"]) for r in rows}


async def test_a_commit_by_a_person_is_applied_with_its_plan(runtime: Runtime, tmp_path: Path) -> None:
    url, sync, ana = await _sync_repo(runtime, tmp_path)
    ana.write("sales/daily.sql", HEADER.format(description="Orders per day", query="SELECT COUNT(*) AS n FROM sales.orders"))
    ana.write("sales/orders.sql", "SELECT 10 AS id\n")
    ana.remove("sales/old.sql")
    sha = ana.commit("Daily orders; orders v2; drop old")
    ana.push()
    await settled(sync)

    live = await _live(runtime)
    assert sorted(live) == ["sales.daily", "sales.orders"]
    assert live["sales.orders"]["query"] == "SELECT 10 AS id"
    assert live["sales.daily"]["description"] == "Orders per day"
    applied = [e for e in await _git_events(runtime, url) if e.type == "GitCommitApplied"]
    assert len(applied) == 1
    event = applied[0].event
    assert event.sha == sha and event.commits == [sha] and event.authors == ["Ana Lima <ana@example.com>"]
    assert event.plan == ["+ create sales.daily", "~ update sales.orders (query)", "- delete sales.old"]
    # The catalog's events are the person's (matched by email) and name the commit.
    daily = next(v for v in await runtime.catalog.store.read_all(0, 1000, ["TableCreated"]) if v.event.spec.name == "daily")
    assert daily.metadata.actor.startswith("user:") and daily.metadata.extra == {"git_commit": sha}
    # No loop: the files were already canonical, so Maestro commits nothing, and applies nothing again.
    assert log(tmp_path / "remote.git")[0]["sha"] == sha
    before = await runtime.store.head_position()
    await settled(sync)
    await settled(sync)
    assert await runtime.store.head_position() == before


async def test_maestro_commits_are_never_applied_back(runtime: Runtime, tmp_path: Path) -> None:
    url, sync, ana = await _sync_repo(runtime, tmp_path)
    bo = await person(runtime, "Bo Chen", "bo@example.com")
    view = await runtime.catalog.create_table(spec("fresh"), bo)
    await settled(sync)
    await runtime.catalog.update_table(view.table_id, {"description": "from the API"}, bo)
    await settled(sync)
    await settled(sync)
    events = await _git_events(runtime, url)
    assert [e.type for e in events].count("GitCommitApplied") == 0
    assert [e.type for e in events].count("GitCommitted") == 3  # the export, the create, the edit
    assert (await runtime.catalog.get_table(view.table_id)).version == 2


async def test_an_invalid_commit_is_refused_whole_and_not_retried(runtime: Runtime, tmp_path: Path) -> None:
    url, sync, ana = await _sync_repo(runtime, tmp_path)
    ana.write("sales/good.sql", "SELECT 3 AS id\n")
    ana.write("sales/bad.sql", "SELECT FROM WHERE (\n")
    sha = ana.commit("One good, one bad")
    ana.push()
    before = await _live(runtime)
    await settled(sync)
    assert await _live(runtime) == before  # nothing half-applied: not even the good file
    refused = [e.event for e in await _git_events(runtime, url) if e.type == "GitCommitRefused"]
    assert len(refused) == 1 and refused[0].sha == sha
    assert [p["path"] for p in refused[0].problems] == ["sales/bad.sql"]
    assert refused[0].problems[0]["line"] == 1
    status = await runtime.pool.fetchrow("SELECT * FROM git_status")
    assert status["refused_sha"] == sha
    await settled(sync)
    await settled(sync)  # not retried while the branch stays there
    assert [e.type for e in await _git_events(runtime, url)].count("GitCommitRefused") == 1

    ana.write("sales/bad.sql", "SELECT 4 AS id\n")
    fixed = ana.commit("Fix bad")
    ana.push()
    await settled(sync)
    live = await _live(runtime)
    assert live["sales.good"]["query"] == "SELECT 3 AS id" and live["sales.bad"]["query"] == "SELECT 4 AS id"
    status = await runtime.pool.fetchrow("SELECT * FROM git_status")
    assert status["refused_sha"] is None and status["last_applied_sha"] == fixed


async def test_cycles_and_unknown_groups_are_refused(runtime: Runtime, tmp_path: Path) -> None:
    url, sync, ana = await _sync_repo(runtime, tmp_path)
    ana.write("sales/a.sql", "SELECT * FROM sales.b\n")
    ana.write("sales/b.sql", "SELECT * FROM sales.a\n")
    ana.commit("A cycle")
    ana.push()
    await settled(sync)
    ana.pull()
    ana.remove("sales/a.sql")
    ana.write("sales/b.sql", "/*---\ngroup_id: nobody\n---*/\nSELECT 1 AS x\n")
    ana.commit("An unknown group")
    ana.push()
    await settled(sync)
    refused = [e.event for e in await _git_events(runtime, url) if e.type == "GitCommitRefused"]
    assert len(refused) == 2
    assert "cycle" in refused[0].reason and "sales.a" in refused[0].reason
    assert refused[1].problems[0]["message"] == "group_id: no group 'nobody'"
    assert sorted(await _live(runtime)) == ["sales.old", "sales.orders"]


async def test_conflict_the_log_wins_for_the_table_both_changed(runtime: Runtime, tmp_path: Path) -> None:
    url, sync, ana = await _sync_repo(runtime, tmp_path)
    orders = next(r["table_id"] for r in await runtime.pool.fetch("SELECT table_id, name FROM catalog_tables")
                  if r["name"] == "orders")
    bo = await person(runtime, "Bo Chen", "bo@example.com")
    # Bo edits orders through the API while Ana, who has not seen it, edits orders and old in git.
    await runtime.catalog.update_table(orders, {"query": "SELECT 100 AS id"}, bo)
    ana.write("sales/orders.sql", "SELECT 200 AS id\n")
    ana.write("sales/old.sql", "SELECT 300 AS id\n")
    ana.commit("Ana's edits")
    ana.push()
    await settled(sync)

    live = await _live(runtime)
    assert live["sales.orders"]["query"] == "SELECT 100 AS id"  # the log's edit stands
    assert live["sales.old"]["query"] == "SELECT 300 AS id"  # the rest of the commit applies
    applied = [e.event for e in await _git_events(runtime, url) if e.type == "GitCommitApplied"]
    assert applied[-1].kept == ["sales.orders"] and applied[-1].plan == ["~ update sales.old (query)"]
    # ... and the branch ends with the log's version, in a commit by Bo on top of Ana's.
    remote = tmp_path / "remote.git"
    assert show(remote, "sales/orders.sql") == "SELECT 100 AS id\n"
    assert show(remote, "sales/old.sql") == "SELECT 300 AS id\n"
    top = log(remote)[:2]
    assert top[0]["subject"] == "Update sales.orders (query)" and top[0]["author"] == "Bo Chen <bo@example.com>"
    assert top[1]["subject"] == "Ana's edits"


async def test_webhook_is_signed_and_wakes_the_worker(client, runtime: Runtime, tmp_path: Path) -> None:
    from maestro.handlers.git.webhook import signature

    url = bare(tmp_path / "remote.git")
    await configure(runtime, url, mode="sync")
    body = b'{"ref": "refs/heads/main", "after": "abc"}'
    resp = await client.post("/api/v1/git/webhook", data=body, headers={"X-Hub-Signature-256": signature("x", body)})
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "webhook_not_configured"
    assert runtime.config_service is not None
    await runtime.config_service.set_section("git", {"webhook_secret": "hook-secret-1"}, ADMIN, partial=True)
    head = await runtime.store.head_position()
    resp = await client.post("/api/v1/git/webhook", data=body, headers={"X-Hub-Signature-256": signature("wrong", body)})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "signature_invalid"
    assert await runtime.store.head_position() == head  # a refused delivery appends nothing
    good = {"X-Hub-Signature-256": signature("hook-secret-1", body), "X-GitHub-Delivery": "d-1"}
    resp = await client.post("/api/v1/git/webhook", data=body, headers=good)
    assert resp.status == 202 and (await resp.json())["delivery"] == "d-1"
    resp = await client.post("/api/v1/git/webhook", data=body, headers=good)
    assert (await resp.json())["duplicate"] is True
    received = await runtime.store.read_all(head, 100, ["GitWebhookReceived"])
    assert [(r.event.ref, r.event.after) for r in received] == [("refs/heads/main", "abc")]
    other = b'{"ref": "refs/heads/dev"}'
    resp = await client.post("/api/v1/git/webhook", data=other, headers={"X-Hub-Signature-256": signature("hook-secret-1", other)})
    assert "ignored" in await resp.json()

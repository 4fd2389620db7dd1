"""The git reactor live: API edits pushed with no one calling the worker, configuration changed
without a restart, the status in GET /api/v1/config/git, the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from click.testing import CliRunner
from git_repos import Person, bare, files, log
from git_setup import configure, worker

from maestro.cli import main
from maestro.handlers.git.reactor import GitReactor
from maestro.handlers.git.webhook import signature
from maestro.handlers.notify.reactor import ReactorHost
from maestro.runtime import Runtime


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures the root logger (onto CliRunner's stream): put pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def _until(check, what: str, seconds: float = 30.0):
    for _ in range(int(seconds / 0.05)):
        found = check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_api_edits_are_pushed_and_config_changes_apply_live(client, runtime: Runtime, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    url = bare(remote)
    await configure(runtime, url, mode="sync", poll_interval=3600, webhook_secret="hook-secret-2")
    sync = worker(runtime, tmp_path / "data", settle=0.05)
    host = ReactorHost(runtime.store, runtime.health, [GitReactor(sync)], retry_delay=0.05)
    host.start()
    try:
        await _until(lambda: log(remote, ref="main") if (remote / "refs/heads/main").exists() else None, "the first export")
        resp = await client.post("/api/v1/tables", json={"dataset": "sales", "name": "orders", "query": "SELECT 1 AS x"})
        assert resp.status == 201, await resp.text()
        table = await resp.json()
        await _until(lambda: "sales/orders.sql" in files(remote), "the API edit on the remote")
        assert log(remote)[0]["subject"] == "Create sales.orders"

        # A person pushes; the poll interval is an hour, so only the signed webhook brings it in.
        ana = Person(url, tmp_path / "ana")
        ana.write("sales/orders.sql", "SELECT 2 AS x\n")
        sha = ana.commit("orders: 2")
        ana.push()
        body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
        resp = await client.post("/api/v1/git/webhook", data=body,
                                 headers={"X-Hub-Signature-256": signature("hook-secret-2", body)})
        assert resp.status == 202

        for _ in range(600):  # until the status says the commit was applied
            view = await (await client.get("/api/v1/config/git")).json()
            if view["status"]["last_applied"]:
                break
            await asyncio.sleep(0.05)
        assert (await runtime.catalog.get_table(table["id"])).spec["query"] == "SELECT 2 AS x"
        assert view["token"] == {"set": False} and view["webhook_secret"] == {"set": True}
        assert view["status"]["state"] == "ok" and view["status"]["last_applied"]["sha"] == sha
        assert view["status"]["last_commit"]["title"] == "Create sales.orders"

        history = await (await client.get(f"/api/v1/tables/{table['id']}/history")).json()
        # Version 1 is in Maestro's commit, version 2 in Ana's (applied from it).
        assert [v["commit"] for v in history["versions"]][1] == sha and history["versions"][0]["commit"]

        # A new folder of the same repository, set through the API: no restart, a first export there.
        resp = await client.put("/api/v1/config/git", json={**{k: view[k] for k in ("repo_url", "branch", "mode")},
                                                            "path_prefix": "catalog", "committer_email": "maestro@maestro.test"})
        assert resp.status == 200, await resp.text()
        await _until(lambda: "catalog/sales/orders.sql" in files(remote), "the export into the new folder")
        assert log(remote)[0]["subject"] == "Export the catalog: 1 table"
    finally:
        await host.stop()


def test_the_cli_sets_the_git_section(dsn: str, tmp_path: Path, restore_logging) -> None:
    cli = CliRunner()
    base = ["--database-url", dsn, "--data-dir", str(tmp_path / "data")]
    url = f"file://{tmp_path}/remote.git"
    done = cli.invoke(main, ["config", "set", "git", f"repo_url={url}", "mode=sync", "branch=trunk", "path_prefix=warehouse", *base])
    assert done.exit_code == 0, done.output
    shown = json.loads(cli.invoke(main, ["config", "show", "git", "--json", *base]).stdout)[0]
    assert (shown["repo_url"], shown["mode"], shown["branch"], shown["path_prefix"]) == (url, "sync", "trunk", "warehouse")
    assert shown["configured"] is True and shown["token"] == {"set": False}
    bad = cli.invoke(main, ["config", "set", "git", "repo_url=ftp://example.com/x", *base])
    assert bad.exit_code == 2 and "repo_url" in bad.output

"""Git faults: a bad remote, branch or token is a clear error in the log and the status; a remote
that goes away loses nothing; a crash between a commit and its event commits nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from git_http_server import GitHttpServer
from git_repos import bare, git, log
from git_setup import ADMIN, configure, person, settled, spec, worker

from maestro.adapters.git import Git
from maestro.events.model import Metadata
from maestro.events.git import git_stream
from maestro.handlers.git.outbound import EventReader, Outbound
from maestro.handlers.git.status import git_status
from maestro.handlers.git.sync import repo_key
from maestro.runtime import Runtime


async def _events(runtime: Runtime, url: str, branch: str = "main") -> list:
    return await runtime.store.read(git_stream(repo_key(url, branch, "")))


async def _status(runtime: Runtime) -> dict:
    assert runtime.config is not None
    return await git_status(runtime.pool, runtime.config.get("git"))


async def test_a_remote_that_does_not_exist_is_a_clear_error(runtime: Runtime, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/nowhere.git"
    await configure(runtime, url)
    sync = worker(runtime, tmp_path / "data")
    await runtime.catalog.create_table(spec("orders"), ADMIN)
    await settled(sync)
    await settled(sync)
    failed = [e.event for e in await _events(runtime, url) if e.type == "GitSyncFailed"]
    assert len(failed) == 1  # once, not at every retry
    assert failed[0].stage == "fetch" and failed[0].kind == "not_found"
    assert failed[0].message.startswith("no repository at that URL")
    status = await _status(runtime)
    assert status["state"] == "error" and status["error"]["kind"] == "not_found"
    assert status["last_commit"] is None
    [audited] = await runtime.audit.query(types=["GitSyncFailed"])  # what GET /api/v1/audit shows
    assert audited.metadata["actor"] == "system:git" and audited.data["kind"] == "not_found"


async def test_a_branch_that_does_not_exist_names_the_ones_that_do(runtime: Runtime, tmp_path: Path) -> None:
    url = bare(tmp_path / "remote.git")
    await configure(runtime, url)
    await settled(worker(runtime, tmp_path / "data"))  # creates main
    await configure(runtime, url, branch="release")
    await settled(worker(runtime, tmp_path / "data"))
    failed = [e.event for e in await _events(runtime, url, "release") if e.type == "GitSyncFailed"]
    assert failed[0].kind == "branch_missing"
    assert "'release' does not exist on the remote (it has main)" in failed[0].message
    assert git(tmp_path / "remote.git", "branch", "--list").split() == ["*", "main"]


async def test_refused_credentials_and_a_remote_that_comes_back(runtime: Runtime, tmp_path: Path) -> None:
    served = tmp_path / "served"
    bare(served / "catalog.git")
    server = GitHttpServer(served)
    await server.start()
    url = f"{server.base}/catalog.git"
    try:
        assert runtime.config_service is not None
        await configure(runtime, url)
        await runtime.config_service.set_section("git", {"token": "wrong-token-1"}, ADMIN, partial=True)
        sync = worker(runtime, tmp_path / "data")
        await settled(sync)
        status = await _status(runtime)
        assert status["error"]["kind"] == "auth" and status["error"]["stage"] == "fetch"
        assert status["error"]["message"].startswith("the remote refused the credentials")
        assert "wrong-token-1" not in str(await _events(runtime, url))
        assert not any("wrong-token-1" in p.read_text(errors="ignore")
                       for p in (tmp_path / "data").rglob("*") if p.is_file())

        await runtime.config_service.set_section("git", {"token": server.token}, ADMIN, partial=True)
        await settled(sync)
        assert (await _status(runtime))["state"] == "ok"

        # The remote goes away: edits keep being committed in the clone, one commit each ...
        await server.stop()
        ana = await person(runtime, "Ana Lima", "ana@example.com")
        view = await runtime.catalog.create_table(spec("orders"), ana)
        await settled(sync)
        await runtime.catalog.update_table(view.table_id, {"query": "SELECT 2 AS x"}, ana)
        await settled(sync)
        status = await _status(runtime)
        assert status["error"]["kind"] == "unreachable" and status["pending_events"] == 2
        # ... and once it is back, they are all pushed, nothing lost, nothing doubled.
        await server.start()
        await settled(sync)
        subjects = [c["subject"] for c in log(served / "catalog.git")]
        assert subjects == ["Update sales.orders (query)", "Create sales.orders", "Export the catalog: 0 tables"]
        status = await _status(runtime)
        assert status["state"] == "ok" and status["pending_events"] == 0
        # Each error once; a commit on the remote is the proof it works again.
        assert [e.type for e in await _events(runtime, url)] == [
            "GitSyncFailed", "GitCommitted", "GitSyncFailed", "GitCommitted", "GitCommitted"]
    finally:
        await server.stop()


async def test_crash_after_the_push_before_its_event_records_it_once(runtime: Runtime, tmp_path: Path) -> None:
    url = bare(tmp_path / "remote.git")
    await configure(runtime, url)
    sync = worker(runtime, tmp_path / "data")
    await settled(sync)
    await runtime.catalog.create_table(spec("orders"), ADMIN)
    # What a kill -9 right after the push leaves: the commit on the remote, no GitCommitted.
    target = sync.target()
    assert target is not None
    clone = Git(tmp_path / "data" / "git" / target.key, url)
    covered = (await clone.last_maestro_commit("HEAD", target.committer[1], ".")).positions()[1]  # type: ignore[union-attr]
    group = await EventReader(runtime.store, covered, 0.0).next_group()
    assert group is not None
    await Outbound(runtime.store, clone, clone.workdir, target.committer).commit(group)
    await clone.push("main")
    assert [e.type for e in await _events(runtime, url)].count("GitCommitted") == 1

    await settled(worker(runtime, tmp_path / "data"))  # the restart
    await settled(worker(runtime, tmp_path / "data"))
    assert [c["subject"] for c in log(tmp_path / "remote.git")] == ["Create sales.orders", "Export the catalog: 0 tables"]
    committed = [e.event for e in await _events(runtime, url) if e.type == "GitCommitted"]
    assert [c.title for c in committed] == ["Export the catalog: 0 tables", "Create sales.orders"]


CHILD = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from maestro.runtime import open_runtime
from maestro.settings import Settings
from git_setup import worker

async def main():
    runtime = await open_runtime(Settings(database_url={dsn!r}, data_dir={data!r}))
    sync = worker(runtime, Path({data!r}))
    while True:
        await sync.cycle()
        print("cycle", flush=True)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_kill_9_at_any_moment_never_commits_an_event_twice(runtime: Runtime, dsn: str, tmp_path: Path) -> None:
    url = bare(tmp_path / "remote.git")
    await configure(runtime, url)
    data = tmp_path / "data"
    script = CHILD.format(tests=str(Path(__file__).parents[1]), dsn=dsn, data=str(data))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    made = 0
    for round_ in range(6):
        child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None

        async def cycled() -> None:
            # Read in a thread: this test's own loop (its runtime's connections) keeps running, and
            # a child that stops cycling fails the test instead of hanging it.
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), timeout=60)
            assert line, "the worker ended"

        try:
            await cycled()  # it is following
            for n in range(3):
                await runtime.catalog.create_table(spec(f"t{round_}_{n}"), Metadata(actor=ana.actor))  # a request each
                made += 1
            # Kill it somewhere in the middle of committing and pushing those.
            await cycled()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
    await settled(worker(runtime, data))
    commits = log(tmp_path / "remote.git")
    spans = [c["body"].split("Maestro-Events: ")[1].split()[0] for c in commits]
    assert len(spans) == len(set(spans))  # no events committed twice
    creates = [c for c in commits if c["subject"].startswith("Create ")]
    snapshot = [c for c in commits if c["subject"].startswith("Export")]
    assert len(snapshot) == 1 and len(creates) == made - int(snapshot[0]["subject"].split(": ")[1].split()[0])
    committed = [e.event for e in await _events(runtime, url) if e.type == "GitCommitted"]
    assert sorted(c.sha for c in committed) == sorted(c["sha"] for c in commits)

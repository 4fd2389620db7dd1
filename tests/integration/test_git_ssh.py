"""Git over ssh against a real OpenSSH server (tests/ssh_server.py): the key from the encrypted
``ssh_key`` secret, the host pinned by ``ssh_known_hosts``; a wrong key and an unknown or changed
host key are clear errors with nothing sent or half-applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from git_repos import Person, bare, files, git, log
from git_setup import ADMIN, configure, person, settled, spec, worker
from ssh_server import KeyPair, SshServer, client_key, running_sshd

from maestro.events.git import git_stream
from maestro.handlers.git.sync import repo_key
from maestro.runtime import Runtime


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def key(sshd: SshServer, tmp_path: Path) -> KeyPair:
    """A key the server accepts."""
    pair = client_key(tmp_path / "keys", "maestro")
    sshd.authorize(pair)
    return pair


async def _configure_ssh(runtime: Runtime, sshd: SshServer, remote: Path, private_key: str, known_hosts: str,
                         **settings: str) -> str:
    assert runtime.config_service is not None
    bare(remote)
    url = sshd.url(remote)
    await configure(runtime, url, ssh_known_hosts=known_hosts, **settings)
    await runtime.config_service.set_section("git", {"ssh_key": private_key}, ADMIN, partial=True)
    return url


async def _events(runtime: Runtime, url: str) -> list:
    return await runtime.store.read(git_stream(repo_key(url, "main", "")))


def _no_secret_anywhere(secret: str, data: Path) -> None:
    body = secret.strip().splitlines()[1]  # a line of the key's base64
    assert not any(body in p.read_text(errors="ignore") for p in data.rglob("*") if p.is_file())


async def test_changes_are_pushed_over_ssh_with_the_key_of_the_secret(
        runtime: Runtime, client, sshd: SshServer, key: KeyPair, tmp_path: Path) -> None:
    remote = tmp_path / "srv" / "catalog.git"
    url = await _configure_ssh(runtime, sshd, remote, key.private, sshd.known_hosts)
    assert url == f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{remote}"
    sync = worker(runtime, tmp_path / "data")
    await settled(sync)
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    view = await runtime.catalog.create_table(spec("orders"), ana)
    await settled(sync)
    await runtime.catalog.update_table(view.table_id, {"query": "SELECT 2 AS x"}, ana)
    await settled(sync)

    # Someone else's clone over file:// sees the commits that came in over ssh.
    seen = tmp_path / "seen"
    git(tmp_path, "clone", "-q", f"file://{remote}", seen.name)
    assert [c["subject"] for c in log(seen, ref="HEAD")] == [
        "Update sales.orders (query)", "Create sales.orders", "Export the catalog: 0 tables"]
    assert log(seen, ref="HEAD")[0]["author"] == "Ana Lima <ana@example.com>"
    assert (seen / "sales/orders.sql").read_text().rstrip().endswith("SELECT 2 AS x")
    assert files(remote) == [".maestro-export", "sales/orders.sql"]
    # They came through sshd, authenticated by that key.
    assert "Accepted publickey for" in sshd.tail(400)

    view_git = await (await client.get("/api/v1/config/git")).json()
    assert view_git["ssh_key"] == {"set": True} and view_git["ssh_known_hosts"] == sshd.known_hosts
    assert view_git["status"]["state"] == "ok" and view_git["status"]["pending_events"] == 0
    assert view_git["status"]["last_commit"]["title"] == "Update sales.orders (query)"
    # The key was in a temporary file for each command only: not in the clone, not in the events.
    _no_secret_anywhere(key.private, tmp_path / "data")
    assert key.private.splitlines()[1] not in str(await _events(runtime, url))


async def test_a_key_the_server_refuses_is_an_auth_error_and_nothing_is_half_applied(
        runtime: Runtime, client, sshd: SshServer, key: KeyPair, tmp_path: Path) -> None:
    assert runtime.config_service is not None
    stranger = client_key(tmp_path / "keys", "stranger")  # never authorized
    remote = tmp_path / "srv" / "catalog.git"
    url = await _configure_ssh(runtime, sshd, remote, stranger.private, sshd.known_hosts)
    sync = worker(runtime, tmp_path / "data")
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    view = await runtime.catalog.create_table(spec("orders"), ana)
    await settled(sync)
    await runtime.catalog.update_table(view.table_id, {"query": "SELECT 2 AS x"}, ana)
    await settled(sync)

    status = (await (await client.get("/api/v1/config/git")).json())["status"]
    assert status["state"] == "error" and status["last_commit"] is None
    assert status["error"]["stage"] == "fetch" and status["error"]["kind"] == "auth"
    assert status["error"]["message"].startswith("the remote refused the credentials")
    assert "Permission denied (publickey)" in status["error"]["message"]
    audit = (await (await client.get("/api/v1/audit", params={"type": "GitSyncFailed"})).json())["events"]
    assert len(audit) == 1  # once, not at every retry
    assert audit[0]["data"]["kind"] == "auth" and audit[0]["metadata"]["actor"] == "system:git"
    # Nothing reached the remote, and the refused key is nowhere.
    assert git(remote, "for-each-ref").strip() == ""
    _no_secret_anywhere(stranger.private, tmp_path / "data")

    # The right key, set live: everything waiting is pushed, once.
    await runtime.config_service.set_section("git", {"ssh_key": key.private}, ADMIN, partial=True)
    await settled(sync)
    assert [c["subject"] for c in log(remote)] == ["Update sales.orders (query)", "Export the catalog: 1 table"]
    status = (await (await client.get("/api/v1/config/git")).json())["status"]
    assert status["state"] == "ok" and status["pending_events"] == 0
    assert [e.type for e in await _events(runtime, url)][:2] == ["GitSyncFailed", "GitCommitted"]


@pytest.mark.parametrize("pinned", ["none", "another host's key"])
async def test_a_host_key_not_pinned_is_refused_not_trusted_on_first_use(
        runtime: Runtime, client, sshd: SshServer, key: KeyPair, tmp_path: Path, pinned: str) -> None:
    if pinned == "none":
        known_hosts = ""
    else:  # the right name, a key the server does not have: what a man in the middle shows
        impostor = client_key(tmp_path / "keys", "impostor").public.split()
        known_hosts = f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}"
    remote = tmp_path / "srv" / "catalog.git"
    url = await _configure_ssh(runtime, sshd, remote, key.private, known_hosts)
    sync = worker(runtime, tmp_path / "data")
    await settled(sync)
    await settled(sync)  # a second try is refused too: nothing was remembered from the first

    status = (await (await client.get("/api/v1/config/git")).json())["status"]
    assert status["state"] == "error" and status["error"]["kind"] == "auth"
    message = status["error"]["message"]
    assert message.startswith("the ssh remote's host key is not one of ssh_known_hosts")
    assert "Host key verification failed" in message and "maestro-ssh-" not in message
    failed = [e.event for e in await _events(runtime, url) if e.type == "GitSyncFailed"]
    assert len(failed) == 1 and failed[0].stage == "fetch"
    # ssh stopped before authenticating: the server never saw the key, the remote is untouched,
    # and no known_hosts was written anywhere for a later connection to trust.
    assert "Accepted publickey" not in sshd.tail(400) and "Postponed publickey" not in sshd.tail(400)
    assert git(remote, "for-each-ref").strip() == ""
    assert not [p for p in (tmp_path / "data").rglob("known_hosts*")]

    # Pinning the server's real key (what ssh-keyscan prints) makes it work, live.
    assert runtime.config_service is not None
    await runtime.config_service.set_section("git", {"ssh_known_hosts": sshd.known_hosts}, ADMIN, partial=True)
    await settled(sync)
    assert (await (await client.get("/api/v1/config/git")).json())["status"]["state"] == "ok"
    assert [c["subject"] for c in log(remote)] == ["Export the catalog: 0 tables"]


async def test_mode_sync_applies_a_persons_commit_fetched_over_ssh(
        runtime: Runtime, client, sshd: SshServer, key: KeyPair, tmp_path: Path) -> None:
    remote = tmp_path / "srv" / "catalog.git"
    url = await _configure_ssh(runtime, sshd, remote, key.private, sshd.known_hosts, mode="sync")
    sync = worker(runtime, tmp_path / "data")
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    view = await runtime.catalog.create_table(spec("orders", "SELECT 1 AS id"), ana)
    await settled(sync)

    # Ana pushes from her laptop (over file:// here: the server's side is the same repository).
    ana_clone = Person(f"file://{remote}", tmp_path / "ana", "Ana Lima", "ana@example.com")
    ana_clone.write("sales/orders.sql", "SELECT 10 AS id\n")
    ana_clone.write("sales/daily.sql", "SELECT COUNT(*) AS n FROM sales.orders\n")
    sha = ana_clone.commit("orders v10; daily")
    ana_clone.push()
    await settled(sync)  # Maestro fetches over ssh and applies it

    assert (await runtime.catalog.get_table(view.table_id)).spec["query"] == "SELECT 10 AS id"
    applied = [e.event for e in await _events(runtime, url) if e.type == "GitCommitApplied"]
    assert len(applied) == 1 and applied[0].sha == sha
    assert applied[0].plan == ["+ create sales.daily", "~ update sales.orders (query)"]
    status = (await (await client.get("/api/v1/config/git")).json())["status"]
    assert status["state"] == "ok" and status["last_applied"]["sha"] == sha
    # No loop: canonical files, so nothing is committed back and nothing applied again.
    assert log(remote)[0]["sha"] == sha
    before = await runtime.store.head_position()
    await settled(sync)
    assert await runtime.store.head_position() == before

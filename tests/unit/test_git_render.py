"""Pure parts of the git integration: plan lines, titles, grouping, URLs, signatures, git's errors."""

from __future__ import annotations

import datetime as dt
import doctest

import pytest
from pydantic import ValidationError

from maestro.adapters import git as git_adapter
from maestro.adapters.git import Commit, classify
from maestro.events.catalog import TableCreated, TableSpec
from maestro.events.config import GitSection
from maestro.events.model import Metadata, RecordedEvent
from maestro.handlers.git import render, webhook
from maestro.handlers.git.render import TableChange

A = {"dataset": "sales", "name": "a", "query": "SELECT 1", "description": ""}


def test_plan_lines_read_like_apply() -> None:
    assert TableChange("t", None, A).describe() == "+ create sales.a"
    assert TableChange("t", None, A, was_deleted=True).describe() == "+ restore sales.a"
    assert TableChange("t", A, None).describe() == "- delete sales.a"
    assert TableChange("t", A, {**A, "query": "SELECT 2"}).describe() == "~ update sales.a (query)"
    assert TableChange("t", A, {**A, "name": "b", "description": "x"}).describe() == (
        "~ rename sales.a -> sales.b (description)")
    assert TableChange("t", A, dict(A)).describe() is None


def test_titles_and_plan_order() -> None:
    lines = render.plan_order(["- delete s.z", "~ update s.b (query)", "+ create s.c", "+ create s.a"])
    assert lines == ["+ create s.a", "+ create s.c", "~ update s.b (query)", "- delete s.z"]
    assert render.title_of(lines) == "Apply: 2 created, 1 updated, 1 deleted"
    assert render.title_of(["~ update s.b (query)"]) == "Update s.b (query)"
    assert render.title_of(["+ restore s.a", "+ create s.b"]) == "Apply: 1 created, 0 updated, 0 deleted, 1 restored"
    text = render.message(lines, 4, 9, "user:u1", "c-1", path="catalog")
    assert text.splitlines()[-4:] == [
        "Maestro-Events: 4-9", "Maestro-Path: catalog", "Maestro-Actor: user:u1", "Maestro-Correlation: c-1"]


def _event(position: int, correlation: str) -> RecordedEvent:
    spec = TableSpec(dataset="s", name=f"t{position}", query="SELECT 1")
    return RecordedEvent(position, f"table-{position}", 1, "TableCreated", TableCreated(table_id=str(position), spec=spec),
                         Metadata(actor="a", correlation_id=correlation), dt.datetime.now(dt.timezone.utc))


def test_one_commit_per_command() -> None:
    events = [_event(1, "x"), _event(2, "x"), _event(3, "y"), _event(4, "x")]
    assert [[e.position for e in g] for g in render.group(events)] == [[1, 2], [3], [4]]
    assert [len(g) for g in render.group([_event(n, "x") for n in range(5)], max_events=2)] == [2, 2, 1]


@pytest.mark.parametrize("url", [
    "https://github.com/acme/catalog.git", "http://localhost:3000/a/b", "git@github.com:acme/catalog.git",
    "ssh://git@git.example.com:2222/acme/catalog.git", "file:///srv/git/catalog.git",
])
def test_any_git_url_without_credentials(url: str) -> None:
    assert GitSection(repo_url=url).repo_url == url


@pytest.mark.parametrize("url", [
    "https://user:token-999@github.com/a/b", "http://github.com/a/b", "ftp://example.com/x",
    "file://host/x", "ssh://git:pw-999@host/x", "catalog.git",
])
def test_urls_refused_without_quoting_them(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        GitSection(repo_url=url)
    assert all("999" not in e["msg"] for e in info.value.errors())  # the message the API shows


def test_branches_and_prefixes() -> None:
    assert GitSection(branch="release/2026").branch == "release/2026"
    for bad in ("a..b", "-x", "a b", "x.lock", "a/"):
        with pytest.raises(ValidationError):
            GitSection(branch=bad)
    assert GitSection(path_prefix="/warehouse/catalog/").path_prefix == "warehouse/catalog"
    with pytest.raises(ValidationError):
        GitSection(path_prefix="../outside")


def test_webhook_signature_is_githubs() -> None:
    assert doctest.testmod(webhook).failed == 0
    section = GitSection(repo_url="file:///x")
    webhook.verify("k", section, b"{}", webhook.signature("k", b"{}"))
    with pytest.raises(webhook.SignatureInvalid):
        webhook.verify("k", section, b"{}", webhook.signature("other", b"{}"))
    with pytest.raises(webhook.WebhookNotConfigured):
        webhook.verify(None, section, b"{}", None)


@pytest.mark.parametrize(("stderr", "kind"), [
    ("fatal: Authentication failed for 'https://h/x.git/'", "auth"),
    ("fatal: could not read Username for 'https://h': terminal prompts disabled", "auth"),
    ("git@h: Permission denied (publickey).", "auth"),
    ("fatal: repository 'https://h/x.git/' not found", "failed"),
    ("fatal: '/x.git' does not appear to be a git repository", "not_found"),
    ("fatal: couldn't find remote ref refs/heads/dev", "branch_missing"),
    ("! [rejected] main -> main (fetch first)", "rejected"),
    ("fatal: unable to access 'http://127.0.0.1:1/x/': Failed to connect to 127.0.0.1 port 1", "unreachable"),
    ("fatal: something else", "failed"),
])
def test_git_messages_become_kinds(stderr: str, kind: str) -> None:
    assert classify(stderr) == kind
    assert git_adapter.GitError("x", kind).retryable == (kind in ("unreachable", "timeout", "rejected"))


def test_maestro_commits_are_known_by_committer_and_trailer() -> None:
    mine = Commit("s", "Ana", "ana@x", "Maestro", "maestro@x", "3-7", "catalog", "Create s.a")
    assert mine.positions() == (3, 7) and mine.by_maestro("MAESTRO@x") and mine.by_maestro("maestro@x", "catalog")
    assert not mine.by_maestro("maestro@x", ".")
    forged = Commit("s", "Ana", "ana@x", "Ana", "ana@x", "3-7", "catalog", "Create s.a")
    assert not forged.by_maestro("maestro@x")
    person = Commit("s", "Ana", "ana@x", "Maestro", "maestro@x", "", "", "Fix")
    assert person.positions() is None and not person.by_maestro("maestro@x")


def test_a_refused_commit_is_a_slack_notice() -> None:
    from maestro.events.git import GitCommitRefused
    from maestro.handlers.notify.slack_blocks import Links
    from maestro.handlers.notify.slack_messages import NOTICE_EVENT_TYPES, NoticeContext, slack_notices

    event = GitCommitRefused(repo_key="k", sha="0123456789abcdef", commits=["0123456789abcdef"],
                             reason="1 problem(s) in the commit; nothing was applied")
    [notice] = slack_notices(event, NoticeContext(Links(None)), key="git-k@3")
    assert "GitCommitRefused" in NOTICE_EVENT_TYPES
    assert notice.kind == "git_refused" and notice.text.startswith("Commit 0123456789ab was refused")

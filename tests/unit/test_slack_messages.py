"""Slack messages: pure builders and the event -> notice mapping (no Slack, no database)."""

from __future__ import annotations

import doctest
import json

from maestro.events.auth import ApiTokenCreated, ApiTokenRevoked, LoginDenied
from maestro.events.config import ConfigChanged, ConfigSecretsCleared
from maestro.events.imports import ImportSchemaChanged
from maestro.events.runs import JobFailed, JobStatistics, JobSucceeded, RunFinished, RunRetryRequested
from maestro.events.users import UserSignedUp
from maestro.handlers.notify import slack_blocks, slack_messages
from maestro.handlers.notify.slack_blocks import Links
from maestro.handlers.notify.slack_messages import (
    NoticeContext, Route, RunSnapshot, RunTable, TableInfo, slack_notices, probe_notice,
)

LINKS = Links("https://maestro.example")
ERROR = "Syntax error: Unexpected keyword FROM at [3:15]"


def _run(*tables: RunTable, status: str = "failed") -> RunSnapshot:
    return RunSnapshot("run-1", "daily", status, tables)


def _failed(table_id: str = "t1") -> JobFailed:
    return JobFailed(job_id=f"j-{table_id}", run_id="run-1", table_id=table_id, reason="invalidQuery",
                     message=ERROR, retryable=False)


def test_doctests() -> None:
    assert doctest.testmod(slack_blocks).failed == 0
    assert doctest.testmod(slack_messages).failed == 0


def test_a_failed_run_names_its_tables_and_the_first_error_with_line_and_column() -> None:
    run = _run(RunTable("t1", "sales.orders", "failed", ERROR, "g1"),
               RunTable("t2", "sales.items", "skipped", "upstream_failed", "g1"),
               RunTable("t3", "sales.ok", "succeeded", None, "g1"))
    [notice] = slack_notices(_failed(), NoticeContext(LINKS, run=run))
    assert notice.key == "run-run-1" and notice.edit
    assert "line 3, column 15" in notice.text and "sales.orders" in notice.text
    body = json.dumps(notice.blocks)
    assert "<https://maestro.example/tables/t1|sales.orders>" in body
    assert "<https://maestro.example/runs/run-1|Run run-1 (daily)>" in body
    assert "sales.ok" not in body  # only the tables with something to say
    assert notice.blocks[0]["type"] == "header"


def test_the_run_message_follows_the_run_more_failures_retry_recovery() -> None:
    one = slack_notices(_failed(), NoticeContext(LINKS, run=_run(
        RunTable("t1", "a.one", "failed", ERROR, "g1"), RunTable("t2", "a.two", "running", None, "g1"),
        status="running")))[0]
    two = slack_notices(_failed("t2"), NoticeContext(LINKS, run=_run(
        RunTable("t1", "a.one", "failed", ERROR, "g1"), RunTable("t2", "a.two", "failed", "boom", "g1"))))[0]
    retry = slack_notices(RunRetryRequested(run_id="run-1", tables=["t1", "t2"]), NoticeContext(LINKS, run=_run(
        RunTable("t1", "a.one", "pending", None, "g1", retried=True),
        RunTable("t2", "a.two", "pending", None, "g1", retried=True), status="running")))[0]
    done = slack_notices(RunFinished(run_id="run-1", status="succeeded"), NoticeContext(LINKS, run=_run(
        RunTable("t1", "a.one", "succeeded", None, "g1", retried=True),
        RunTable("t2", "a.two", "succeeded", None, "g1", retried=True), status="succeeded")))[0]
    assert {one.key, two.key, retry.key, done.key} == {"run-run-1"}
    assert "has failures: a.one." in one.text and "a.two" not in one.text
    assert "failed: a.one, a.two" in two.text
    assert "is being retried" in retry.text
    assert "recovered after a retry" in done.text


def test_a_run_without_failures_says_nothing() -> None:
    run = _run(RunTable("t1", "a.one", "succeeded"), status="succeeded")
    assert slack_notices(RunFinished(run_id="run-1", status="succeeded"), NoticeContext(LINKS, run=run)) == []


def test_run_messages_split_by_channel_table_override_then_group() -> None:
    run = _run(RunTable("t1", "a.one", "failed", ERROR, "g1"), RunTable("t2", "b.two", "failed", "x", "g2"),
               RunTable("t3", "b.three", "failed", "y", "g2", slack_channel="#vip"))
    routes = {n.route for n in slack_notices(_failed(), NoticeContext(LINKS, run=run))}
    assert routes == {Route(None, "g1"), Route(None, "g2"), Route("#vip", "g2")}


def test_outside_text_is_escaped() -> None:
    run = _run(RunTable("t1", "a.one", "failed", "value <!channel> & <@U1>", "g1"))
    body = json.dumps(slack_notices(_failed(), NoticeContext(LINKS, run=run))[0].blocks)
    assert "<!channel>" not in body and "&lt;!channel&gt;" in body


def test_table_failing_outside_a_run_and_recovering() -> None:
    table = TableInfo("t1", "a.one", "g1", "#one")
    failed = JobFailed(job_id="j1", run_id=None, table_id="t1", reason="invalidQuery", message=ERROR, retryable=False)
    [n] = slack_notices(failed, NoticeContext(LINKS, table=table))
    assert (n.kind, n.route) == ("table_failed", Route("#one", "g1")) and "line 3, column 15" in n.text
    ok = JobSucceeded(job_id="j2", run_id="run-2", table_id="t1", statistics=JobStatistics())
    [n] = slack_notices(ok, NoticeContext(LINKS, table=table, job_kind="query", previous_failed=True))
    assert n.kind == "table_recovered" and "recovered" in n.text
    assert slack_notices(ok, NoticeContext(LINKS, table=table, job_kind="query")) == []


def test_import_schema_change() -> None:
    e = ImportSchemaChanged(job_id="j1", run_id="r", table_id="t1", added=["city"], action="reimport")
    [n] = slack_notices(e, NoticeContext(LINKS, table=TableInfo("t1", "crm.people", "g1")))
    assert n.kind == "import_schema" and "re-imported in full" in n.text and "+ city" in json.dumps(n.blocks)


def test_people_and_credentials_go_to_the_default_channel_and_never_quote_secrets() -> None:
    ctx = NoticeContext(LINKS, actor="ana@example.com", subject="ci")
    notices = [
        *slack_notices(LoginDenied(reason="domain not allowed", email="eve@evil.example", address="203.0.113.9"), ctx, key="k1"),
        *slack_notices(UserSignedUp(user_id="u1", issuer="i", subject="s", email="bo@example.com", enabled=False), ctx, key="k2"),
        *slack_notices(ApiTokenCreated(token_id="tok1", user_id="u1", name="ci", secret_hash="h"), ctx, key="k3"),
        *slack_notices(ApiTokenRevoked(token_id="tok1"), ctx, key="k4"),
        *slack_notices(ConfigChanged(section="slack", settings={}, changed=["bot_token", "channel"]), ctx, key="k5"),
        *slack_notices(ConfigSecretsCleared(section="git", settings={}, cleared=["token"], lost_key_id="abcd1234"), ctx, key="k6"),
    ]
    assert [n.kind for n in notices] == ["login_denied", "user_waiting", "token_created", "token_revoked",
                                         "credentials", "credentials"]
    assert {n.route for n in notices} == {Route()}
    assert "bot_token (secret), channel" in notices[4].text and "ana@example.com" in notices[4].text
    assert "waits for approval" in notices[1].text
    assert slack_notices(UserSignedUp(user_id="u2", issuer="i", subject="s", email=None, enabled=True), ctx) == []


def test_the_test_message_is_fixed() -> None:
    assert probe_notice() == probe_notice() and "Slack is connected" in probe_notice().text


def test_block_limits_are_kept() -> None:
    tables = tuple(RunTable(f"t{i}", f"d.t{i}" + "x" * 200, "failed", "e" * 5000, "g") for i in range(80))
    [n] = slack_notices(_failed(), NoticeContext(LINKS, run=_run(*tables)))
    assert len(n.blocks) <= 50
    for b in n.blocks:
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= 3000
        if b["type"] == "header":
            assert len(b["text"]["text"]) <= 150

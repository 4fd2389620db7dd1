"""What Maestro says in Slack, and about what: events in, :class:`Notice` values out (pure).

:func:`slack_notices` maps one event, with the :class:`NoticeContext` read for it (the run's
state *now*, the table, who acted; ``maestro.handlers.notify.slack_context`` reads it), to the
notices to send. A notice names its message by ``key``: a failed run has one message per run and
channel (``run-<id>``), edited as more tables fail, when it is retried and when it recovers, so
its builder takes the run's current state, not the event. Where a notice goes is its
:class:`Route` (``maestro.handlers.notify.slack_routing``): a table's own channel, else its
group's, else the default; notices about people and credentials always go to the default channel.

Nothing here quotes a secret: configuration notices name the fields that changed, never values.

>>> run = RunSnapshot("r1", "daily", "failed", (
...     RunTable("t1", "sales.orders", "failed", "Syntax error: Unexpected FROM at [2:7]", "g1"),
...     RunTable("t2", "sales.items", "succeeded", None, "g1")))
>>> [n] = run_notices(run, Links("https://m.example"))
>>> n.key, n.route, n.edit
('run-r1', Route(table_channel=None, group_id='g1'), True)
>>> n.text
'Run r1 (daily) failed: sales.orders. First error (line 2, column 7): Syntax error: Unexpected FROM at [2:7]'
>>> run_notices(RunSnapshot("r2", None, "succeeded", (RunTable("t2", "s.i", "succeeded", None, None),)), Links(None))
[]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from maestro.events.auth import ApiTokenCreated, ApiTokenRevoked, LoginDenied
from maestro.events.config import ConfigChanged, ConfigRemoved, ConfigSecretsCleared, ConfigSecretsRotated, SECTIONS
from maestro.events.digests import CostDigestCompiled
from maestro.events.imports import ImportSchemaChanged
from maestro.events.model import Event
from maestro.events.runs import JobFailed, JobSkipped, JobSucceeded, RunFinished, RunRetryRequested
from maestro.events.users import UserSignedUp
from maestro.handlers.notify.slack_blocks import (
    Block, Links, clip, code, context, error_position, escape, header, message, section,
)

# The events that can produce a notice: what the Slack reactor subscribes to. DeliveryFailed is
# the delivery log's (maestro.events.deliveries): matched by name so this module does not depend on it.
NOTICE_EVENT_TYPES = frozenset({
    "JobFailed", "JobSkipped", "JobSucceeded", "RunFinished", "RunRetryRequested", "ImportSchemaChanged",
    "DeliveryFailed", "LoginDenied", "UserSignedUp", "ApiTokenCreated", "ApiTokenRevoked",
    "ConfigChanged", "ConfigSecretsRotated", "ConfigSecretsCleared", "ConfigRemoved", "CostDigestCompiled",
    "GitCommitRefused",
})
_ICON = {"failed": ":x:", "succeeded": ":white_check_mark:", "skipped": ":heavy_minus_sign:",
         "cancelled": ":no_entry_sign:"}


@dataclass(frozen=True, slots=True)
class Route:
    """Where a notice goes: a table's own channel, else its group's, else (both None) the default."""

    table_channel: str | None = None
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # run, table_failed, table_recovered, import_schema, delivery_failed, login_denied, ...
    key: str  # names the message: the same key in the same channel is the same Slack message
    text: str  # the fallback (notifications, screen readers) and the webhook's text
    blocks: list[Block]
    route: Route = Route()
    edit: bool = False  # a later notice with this key edits the posted message (bot token)


@dataclass(frozen=True, slots=True)
class RunTable:
    table_id: str
    name: str
    state: str  # pending, planned, running, extracting, succeeded, failed, skipped, cancelled
    error: str | None = None
    group_id: str | None = None
    slack_channel: str | None = None
    retried: bool = False  # named in a retry of the run: it had failed in it
    kind: str = "query"


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    run_id: str
    frequency_id: str | None
    status: str  # running, succeeded, failed, cancelled
    tables: tuple[RunTable, ...]


@dataclass(frozen=True, slots=True)
class TableInfo:
    table_id: str
    name: str
    group_id: str | None = None
    slack_channel: str | None = None


@dataclass(frozen=True, slots=True)
class NoticeContext:
    links: Links
    actor: str = ""  # who did it, as a person reads it (a user's name or email, or system:...)
    run: RunSnapshot | None = None  # the event's run, as it is now
    table: TableInfo | None = None  # the event's table
    job_kind: str | None = None
    previous_failed: bool = False  # a JobSucceeded: the table's last job before this run failed
    subject: str = ""  # the user or token the event names, as a person reads it
    extra: dict[str, Any] = field(default_factory=dict)


def _route(t: RunTable | TableInfo) -> Route:
    return Route(t.slack_channel, t.group_id)


def _first_error(tables: list[RunTable]) -> tuple[str, str] | None:
    failed = [t for t in tables if t.state == "failed" and t.error]
    if not failed:
        return None
    where = error_position(failed[0].error or "")
    at = f" (line {where[0]}, column {where[1]})" if where else ""
    return at, failed[0].error or ""


def _run_title(run: RunSnapshot, failed: list[RunTable]) -> tuple[str, str]:
    """(emoji, words) saying where the run stands."""
    if failed:
        status = "failed" if run.status == "failed" else "has failures" if run.status == "running" else run.status
        return ":x:", status
    if run.status == "succeeded":
        return ":white_check_mark:", "recovered after a retry"
    if run.status == "running":
        return ":arrows_counterclockwise:", "is being retried"
    return _ICON.get(run.status, ":grey_question:"), run.status


def run_message(run: RunSnapshot, tables: list[RunTable], links: Links) -> tuple[str, list[Block]]:
    """The message of a run that had failures, as the run is now (``tables``: those it reports)."""
    failed = [t for t in tables if t.state == "failed"]
    name = run.run_id + (f" ({run.frequency_id})" if run.frequency_id else "")
    icon, status = _run_title(run, failed)
    lines = []
    for t in tables:
        what = "import failed" if t.kind == "import" and t.state == "failed" else t.state
        lines.append(f"{_ICON.get(t.state, ':hourglass_flowing_sand:')} {links.link('tables', t.table_id, t.name)}"
                     f" — {escape(what)}")
    blocks = [header(f"Run {name} {status}"),
              section(f"{icon} {links.link('runs', run.run_id, f'Run {name}')} {escape(status)}\n" + "\n".join(lines))]
    first = _first_error(tables)
    if first is not None:
        blocks.append(section(f"*First error*{first[0]}:\n{code(first[1])}"))
    blocks.append(context(f"{len(failed)} failed of {len(run.tables)} in the run · status {escape(run.status)}"))
    names = ", ".join(t.name for t in (failed or tables))
    text = f"Run {name} {status}: {names}."
    if first is not None:
        text += f" First error{first[0]}: {clip(first[1], 500)}"
    return text, message(blocks)


def run_notices(run: RunSnapshot, links: Links) -> list[Notice]:
    """One edited message per channel for a run that has (had) failures; none for a clean run."""
    concerned = [t for t in run.tables if t.state == "failed" or t.retried]
    if not concerned:
        return []
    notices = []
    by_route = itertools.groupby(sorted(concerned, key=lambda t: (t.slack_channel or "", t.group_id or "")), key=_route)
    for route, tables in by_route:
        text, blocks = run_message(run, list(tables), links)
        notices.append(Notice("run", f"run-{run.run_id}", text, blocks, route, edit=True))
    return notices


def _simple(kind: str, key: str, title: str, body: str, text: str, route: Route = Route(),
            note: str = "") -> Notice:
    blocks = [header(title), section(body)] + ([context(note)] if note else [])
    return Notice(kind, key, text, blocks, route)


def _table_notice(event: JobFailed | JobSucceeded, ctx: NoticeContext) -> Notice | None:
    t = ctx.table
    if t is None:
        return None
    link = ctx.links.link("tables", t.table_id, t.name)
    if isinstance(event, JobFailed):
        where = error_position(event.message)
        at = f" (line {where[0]}, column {where[1]})" if where else ""
        return _simple("table_failed", f"table-failed-{event.job_id}", f"{t.name} failed",
                       f":x: {link} failed{at}:\n{code(event.message)}",
                       f"{t.name} failed{at}: {clip(event.message, 500)}", _route(t), f"reason {escape(event.reason)}")
    return _simple("table_recovered", f"table-recovered-{event.job_id}", f"{t.name} recovered",
                   f":white_check_mark: {link} succeeded again after failing.",
                   f"{t.name} recovered: it succeeded again after failing.", _route(t))


def _import_notice(event: ImportSchemaChanged, ctx: NoticeContext) -> Notice:
    name = ctx.table.name if ctx.table else event.table_id
    link = ctx.links.link("tables", event.table_id, name)
    changes = [*(f"+ {c}" for c in event.added), *(f"- {c}" for c in event.removed), *(f"~ {c}" for c in event.changed)]
    said = {"reimport": "is being re-imported in full", "fail": "failed: its policy is to stop",
            "add_columns": "gained columns, added to the table"}[event.action]
    route = _route(ctx.table) if ctx.table else Route()
    return _simple("import_schema", f"import-schema-{event.job_id}", f"Import of {name}: the source's columns changed",
                   f":warning: {link} {said}.\n{code(chr(10).join(changes) or '(no column listed)')}",
                   f"Import of {name}: the source's columns changed; the table {said}.", route)


def _delivery_notice(event: Event, ctx: NoticeContext) -> Notice | None:
    """A delivery that ended unsent (``DeliveryFailed`` is final: retried until its deadline, or
    refused in a way retrying cannot change). Its kind is the plan's (``ctx.extra["kind"]``)."""
    kind = getattr(event, "kind", None) or ctx.extra.get("kind")
    if kind == "slack":
        return None  # Slack cannot carry the news of its own failure; the delivery log has it
    what = {"callback": "completion callback", "sheets": "Google Sheets export", "db_export": "database export"}.get(
        str(kind), f"{kind or 'a'} delivery")
    name = ctx.table.name if ctx.table else str(getattr(event, "table_id", "") or "")
    reason = str(getattr(event, "message", "") or getattr(event, "reason", "") or "no reason given")
    how = "after every retry" if getattr(event, "exhausted", False) else f"({escape(str(getattr(event, 'reason', '')))})"
    route = _route(ctx.table) if ctx.table else Route()
    target = ctx.links.link("tables", ctx.table.table_id, name) if ctx.table else escape(name)
    delivery = str(getattr(event, "delivery_id", "") or "")
    return _simple("delivery_failed", f"delivery-failed-{delivery}", f"The {what} of {name} failed",
                   f":x: The {what} of {target} failed {how}:\n{code(reason)}",
                   f"The {what} of {name} failed {how}: {clip(reason, 500)}", route,
                   f"delivery {escape(delivery)} · it can be redelivered from Maestro" if delivery else "")


def _config_notice(event: Event, ctx: NoticeContext, key: str) -> Notice | None:
    section_name = getattr(event, "section", "")
    where = f"{section_name} {getattr(event, 'name', None)}" if getattr(event, "name", None) else section_name
    link = ctx.links.link("config", section_name, where)
    if isinstance(event, ConfigChanged):
        if not event.changed:
            return None
        secret = set(SECTIONS[event.section].secret_fields)
        names = ", ".join(f"{f} (secret)" if f in secret else f for f in event.changed)
        body = f":key: {escape(ctx.actor or 'someone')} changed {link}: {escape(names)}"
    elif isinstance(event, ConfigSecretsRotated):
        body = f":key: The secrets of {link} were re-encrypted under a new master secret ({escape(event.key_id)})."
    elif isinstance(event, ConfigSecretsCleared):
        body = (f":rotating_light: The secrets of {link} could not be opened (lost master secret) and were "
                f"cleared: {escape(', '.join(event.cleared))}. Enter them again.")
    elif isinstance(event, ConfigRemoved):
        body = f":key: {escape(ctx.actor or 'someone')} removed {link}."
    else:
        return None
    text = body.split(" ", 1)[1].replace(link, where)
    return _simple("credentials", key, f"Configuration changed: {where}", body, text)


def slack_notices(event: Event, ctx: NoticeContext, *, key: str = "") -> list[Notice]:
    """The notices ``event`` gives, in ``ctx``. ``key``: a unique name for one-off messages
    (the event's stream and version), so a replayed event names the same message."""
    links = ctx.links
    run_id = getattr(event, "run_id", None)
    if isinstance(event, JobFailed | JobSkipped | RunFinished | RunRetryRequested) and run_id and ctx.run:
        return run_notices(ctx.run, links)
    if isinstance(event, JobFailed) and run_id is None:
        return [n] if (n := _table_notice(event, ctx)) else []
    if isinstance(event, JobSucceeded) and ctx.previous_failed and ctx.job_kind in ("query", "import", "external"):
        return [n] if (n := _table_notice(event, ctx)) else []
    if isinstance(event, ImportSchemaChanged):
        return [_import_notice(event, ctx)]
    if type(event).__name__ == "DeliveryFailed":
        return [n] if (n := _delivery_notice(event, ctx)) else []
    if isinstance(event, LoginDenied):
        who = event.email or event.user_id or "someone"
        return [_simple("login_denied", key, "A login was refused",
                        f":no_entry: A login by {escape(who)} was refused: {escape(event.reason)}",
                        f"A login by {who} was refused: {event.reason}",
                        note=f"from {escape(event.address)}" if event.address else "")]
    if isinstance(event, UserSignedUp) and not event.enabled:
        who = event.name or event.email or event.user_id
        email = f" ({event.email})" if event.email and event.email != who else ""
        return [_simple("user_waiting", key, "A new user waits for approval",
                        f":wave: {links.link('users', event.user_id, who)}{escape(email)} logged in for the first "
                        "time and waits for an administrator to enable them.",
                        f"{who}{email} waits for approval.")]
    if isinstance(event, ApiTokenCreated):
        owner = ctx.subject or event.user_id
        return [_simple("token_created", key, "An API token was created",
                        f":key: {escape(ctx.actor or owner)} created the API token “{escape(event.name)}” "
                        f"({escape(event.token_id)}) for {links.link('users', event.user_id, owner)}.",
                        f"API token {event.name} ({event.token_id}) created for {owner}.")]
    if isinstance(event, ApiTokenRevoked):
        return [_simple("token_revoked", key, "An API token was revoked",
                        f":key: {escape(ctx.actor or 'someone')} revoked the API token {escape(ctx.subject or event.token_id)}.",
                        f"API token {ctx.subject or event.token_id} revoked.")]
    if isinstance(event, ConfigChanged | ConfigSecretsRotated | ConfigSecretsCleared | ConfigRemoved):
        return [n] if (n := _config_notice(event, ctx, key)) else []
    if type(event).__name__ == "GitCommitRefused":  # maestro.events.git; docs/git.md
        sha = str(getattr(event, "sha", ""))[:12]
        reason = str(getattr(event, "reason", ""))
        return [_simple("git_refused", key, "A commit on the catalog's branch was refused",
                        f":x: Commit `{escape(sha)}` on the catalog's branch was refused; nothing of it was "
                        f"applied: {escape(reason)}", f"Commit {sha} was refused: {reason}")]
    if isinstance(event, CostDigestCompiled):
        from maestro.handlers.notify.cost_digest import digest_notice  # it builds on this module

        return [digest_notice(event, links, key=key)]
    return []


TEST_TEXT = "Maestro test message: Slack is connected, and this channel gets Maestro's alerts."


def probe_notice() -> Notice:
    """The fixed message of ``POST /api/v1/config/slack/test``: never text from the caller (the
    original's ``/slacktest?msg=`` let any user post anything under Maestro's name)."""
    return Notice("test", "", TEST_TEXT, [section(f":white_check_mark: {TEST_TEXT}")])

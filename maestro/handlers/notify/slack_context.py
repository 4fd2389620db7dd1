"""What a Slack notice needs besides its event, read from the read models (:class:`NoticeContext`).

The reactor reads it when it handles the event. The read models it uses (runs, catalog, users,
tokens, deliveries) are inline projections, written in the transaction of the event itself, so
they are at least as new as the event: a run's message shows the run *as it is now*, which is what
an edited message should say (a replay after a crash shows the newer state, never an older one).
"""

from __future__ import annotations

from typing import Any

from maestro.events.model import RecordedEvent
from maestro.handlers.notify.slack_blocks import Links
from maestro.handlers.notify.slack_messages import NoticeContext, RunSnapshot, RunTable, TableInfo


async def run_snapshot(pool: Any, run_id: str) -> RunSnapshot | None:
    run = await pool.fetchrow("SELECT run_id, frequency_id, status FROM runs WHERE run_id = $1", run_id)
    if run is None:
        return None
    rows = await pool.fetch(
        "SELECT rt.table_id, rt.name, rt.state, rt.error, rt.group_id, rt.retry_base, "
        "coalesce(j.kind, rt.config->>'kind', 'query') AS kind, ct.spec->>'slack_channel' AS slack_channel "
        "FROM run_tables rt LEFT JOIN jobs j ON j.job_id = rt.job_id "
        "LEFT JOIN catalog_tables ct ON ct.table_id = rt.table_id "
        "WHERE rt.run_id = $1 ORDER BY rt.priority DESC, rt.name", run_id)
    tables = tuple(
        RunTable(r["table_id"], r["name"], r["state"], r["error"], r["group_id"], r["slack_channel"],
                 retried=r["retry_base"] > 0, kind=r["kind"])
        for r in rows
    )
    return RunSnapshot(run["run_id"], run["frequency_id"], run["status"], tables)


async def table_info(pool: Any, table_id: str | None) -> TableInfo | None:
    if not table_id:
        return None
    row = await pool.fetchrow(
        "SELECT table_id, dataset || '.' || name AS name, spec->>'group_id' AS group_id, "
        "spec->>'slack_channel' AS slack_channel FROM catalog_tables WHERE table_id = $1", table_id)
    if row is None:
        return TableInfo(table_id, table_id)  # deleted since: its id is all there is to say
    return TableInfo(row["table_id"], row["name"], row["group_id"], row["slack_channel"])


async def person(pool: Any, user_id: str | None) -> str:
    """A user as a person reads it: name, else email, else the id (``system:...`` stays as is)."""
    if not user_id:
        return ""
    row = await pool.fetchrow("SELECT name, email FROM users WHERE user_id = $1", user_id)
    if row is None:
        return user_id
    return row["name"] or row["email"] or user_id


async def notice_context(pool: Any, recorded: RecordedEvent, links: Links) -> NoticeContext:
    e = recorded.event
    name = type(e).__name__
    actor = await person(pool, recorded.metadata.actor)
    run_id = getattr(e, "run_id", None)
    table_id = getattr(e, "table_id", None)
    run = await run_snapshot(pool, run_id) if run_id and name != "DeliveryFailed" else None
    table = await table_info(pool, table_id)
    job_kind, previous_failed, subject, extra = None, False, "", {}
    if name == "JobSucceeded":
        job = await pool.fetchrow("SELECT kind, planned_at FROM jobs WHERE job_id = $1", e.job_id)  # type: ignore[attr-defined]
        if job is not None:
            job_kind = job["kind"]
            # The table's last job of the same kind before this one, outside this run.
            before = await pool.fetchval(
                "SELECT state FROM jobs WHERE table_id = $1 AND kind = $2 AND job_id <> $3 "
                "AND run_id IS DISTINCT FROM $4 AND planned_at <= $5 AND state IN ('succeeded', 'failed') "
                "ORDER BY planned_at DESC LIMIT 1",
                table_id, job_kind, e.job_id, run_id, job["planned_at"])  # type: ignore[attr-defined]
            previous_failed = before == "failed"
    elif name == "DeliveryFailed":
        extra["kind"] = await pool.fetchval("SELECT kind FROM deliveries WHERE delivery_id = $1",
                                            e.delivery_id)  # type: ignore[attr-defined]
    elif name == "ApiTokenCreated":
        subject = await person(pool, e.user_id)  # type: ignore[attr-defined]
    elif name == "ApiTokenRevoked":
        row = await pool.fetchrow("SELECT name, user_id FROM auth_tokens WHERE token_id = $1",
                                  e.token_id)  # type: ignore[attr-defined]
        if row is not None:
            subject = f"“{row['name']}” ({e.token_id}) of {await person(pool, row['user_id'])}"  # type: ignore[attr-defined]
    return NoticeContext(links=links, actor=actor, run=run, table=table, job_kind=job_kind,
                         previous_failed=previous_failed, subject=subject, extra=extra)

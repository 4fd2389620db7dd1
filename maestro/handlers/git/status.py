"""What ``GET /api/v1/config/git`` adds to the section: the repository's last sync, its commit,
what people's commits did, and any error — from the ``git_status`` read model, so every replica
answers the same."""

from __future__ import annotations

from typing import Any

from maestro.events.config import GitSection
from maestro.handlers.git.render import CATALOG_EVENTS
from maestro.handlers.git.sync import repo_key


def _at(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def git_status(pool: Any, section: GitSection) -> dict[str, Any]:
    if not section.repo_url:
        return {"state": "not_configured"}
    key = repo_key(section.repo_url, section.branch, section.path_prefix)
    row = await pool.fetchrow("SELECT * FROM git_status WHERE repo_key = $1", key)
    covered = row["last_commit_position"] if row is not None else None
    pending = await pool.fetchval(
        "SELECT count(*) FROM events WHERE position > $1 AND type = ANY($2)", covered or 0, list(CATALOG_EVENTS))
    if row is None:
        return {"state": "waiting", "repo_key": key, "pending_events": pending, "last_sync_at": None,
                "last_commit": None, "last_applied": None, "refused": None, "error": None}
    error = None if row["error_stage"] is None else {
        "stage": row["error_stage"], "kind": row["error_kind"], "message": row["error"], "at": _at(row["error_at"])}
    return {
        "state": "error" if error else ("refused" if row["refused_sha"] else "ok"),
        "repo_key": key,
        "pending_events": pending if covered is not None else None,
        "last_sync_at": _at(row["last_sync_at"]),
        "last_commit": None if row["last_commit_sha"] is None else {
            "sha": row["last_commit_sha"], "title": row["last_commit_title"],
            "position": row["last_commit_position"], "at": _at(row["last_commit_at"])},
        "last_applied": None if row["last_applied_sha"] is None else {
            "sha": row["last_applied_sha"], "summary": row["last_applied_summary"], "at": _at(row["last_applied_at"])},
        "refused": None if row["refused_sha"] is None else {
            "sha": row["refused_sha"], "reason": row["refused_reason"], "at": _at(row["refused_at"])},
        "error": error,
    }

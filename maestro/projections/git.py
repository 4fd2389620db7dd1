"""Git (inline): each repository's last commit, apply, refusal and error, and which commit holds
which table version — what ``GET /api/v1/config/git`` and a table's history show."""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.git import (
    GIT_EVENT_TYPES,
    GitCommitApplied,
    GitCommitRefused,
    GitCommitted,
    GitSyncFailed,
    GitSyncRecovered,
)
from maestro.events.model import RecordedEvent
from maestro.events.store import Connection
from maestro.projections.base import Projection

_ENSURE = "INSERT INTO git_status (repo_key, updated_at) VALUES ($1, $2) ON CONFLICT (repo_key) DO NOTHING"
_CLEAR_ERROR = "error_stage = NULL, error_kind = NULL, error = NULL, error_at = NULL"


class GitProjection(Projection):
    name = "git"
    mode = "inline"
    event_types = GIT_EVENT_TYPES
    tables = ("git_status", "git_table_versions")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e, at = r.event, r.occurred_at
            await conn.execute(_ENSURE, e.repo_key, at)  # type: ignore[attr-defined]
            if isinstance(e, GitCommitted):
                await conn.execute(
                    "UPDATE git_status SET branch = $2, last_commit_sha = $3, last_commit_title = $4, "
                    f"last_commit_position = $5, last_commit_at = $6, last_sync_at = $6, {_CLEAR_ERROR}, "
                    "updated_at = $6 WHERE repo_key = $1",
                    e.repo_key, e.branch, e.sha, e.title, e.last_position, at,
                )
                await _versions(conn, e.repo_key, e.sha, r.position, e.tables)
            elif isinstance(e, GitCommitApplied):
                await conn.execute(
                    "UPDATE git_status SET last_applied_sha = $2, last_applied_summary = $3, last_applied_at = $4, "
                    f"refused_sha = NULL, refused_reason = NULL, refused_at = NULL, last_sync_at = $4, {_CLEAR_ERROR}, "
                    "updated_at = $4 WHERE repo_key = $1",
                    e.repo_key, e.sha, e.summary, at,
                )
                await _versions(conn, e.repo_key, e.sha, r.position, e.tables)  # the person's commit
            elif isinstance(e, GitCommitRefused):
                await conn.execute(
                    "UPDATE git_status SET refused_sha = $2, refused_reason = $3, refused_at = $4, "
                    "last_sync_at = $4, updated_at = $4 WHERE repo_key = $1",
                    e.repo_key, e.sha, e.reason, at,
                )
            elif isinstance(e, GitSyncFailed):
                await conn.execute(
                    "UPDATE git_status SET error_stage = $2, error_kind = $3, error = $4, error_at = $5, "
                    "updated_at = $5 WHERE repo_key = $1",
                    e.repo_key, e.stage, e.kind, e.message, at,
                )
            elif isinstance(e, GitSyncRecovered):
                await conn.execute(
                    f"UPDATE git_status SET {_CLEAR_ERROR}, last_sync_at = $2, updated_at = $2 WHERE repo_key = $1",
                    e.repo_key, at,
                )


async def _versions(conn: Connection, key: str, sha: str, position: int, tables: dict[str, int]) -> None:
    if tables:
        await conn.execute(
            "INSERT INTO git_table_versions (repo_key, table_id, version, sha, position) "
            "SELECT $1, t, v, $2, $3 FROM unnest($4::text[], $5::int[]) AS x(t, v) ON CONFLICT DO NOTHING",
            key, sha, position, list(tables), list(tables.values()),
        )

"""Users, groups and memberships (inline): every request's authorization reads these.

Inline because an administrator who disables someone must see the next request of that person
refused, not one a subscription later.
"""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.model import RecordedEvent
from maestro.events.store import Connection
from maestro.events.users import (
    GroupCreated,
    GroupDeleted,
    GroupRenamed,
    MemberAdded,
    MemberRemoved,
    ServiceUserCreated,
    UserDemoted,
    UserDisabled,
    UserEnabled,
    UserProfileChanged,
    UserPromoted,
    UserSignedUp,
)
from maestro.projections.base import Projection

DUPLICATE_GROUP = "groups_name"

# Flag events: (column, value).
_FLAGS = {
    UserEnabled: ("enabled", True),
    UserDisabled: ("enabled", False),
    UserPromoted: ("admin", True),
    UserDemoted: ("admin", False),
}


class UsersProjection(Projection):
    name = "users"
    mode = "inline"
    event_types = frozenset(
        {
            "UserSignedUp", "ServiceUserCreated", "UserProfileChanged", "UserEnabled", "UserDisabled",
            "UserPromoted", "UserDemoted", "GroupCreated", "GroupRenamed", "GroupDeleted",
            "MemberAdded", "MemberRemoved",
        }
    )
    tables = ("users", "groups", "group_members")
    unique_messages = {DUPLICATE_GROUP: "a group with this name already exists"}

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e, at = r.event, r.occurred_at
            if isinstance(e, UserSignedUp):
                await conn.execute(
                    "INSERT INTO users (user_id, kind, issuer, subject, email, name, enabled, admin, "
                    "created_at, updated_at) VALUES ($1, 'person', $2, $3, $4, $5, $6, $7, $8, $8)",
                    e.user_id, e.issuer, e.subject, e.email, e.name, e.enabled, e.admin, at,
                )
            elif isinstance(e, ServiceUserCreated):
                await conn.execute(
                    "INSERT INTO users (user_id, kind, name, enabled, admin, created_at, updated_at) "
                    "VALUES ($1, 'service', $2, true, $3, $4, $4)",
                    e.user_id, e.name, e.admin, at,
                )
            elif isinstance(e, UserProfileChanged):
                await conn.execute(
                    "UPDATE users SET email = $2, name = $3, updated_at = $4 WHERE user_id = $1",
                    e.user_id, e.email, e.name, at,
                )
            elif type(e) in _FLAGS:
                column, value = _FLAGS[type(e)]
                await conn.execute(
                    f"UPDATE users SET {column} = $2, updated_at = $3 WHERE user_id = $1", e.user_id, value, at
                )
            elif isinstance(e, GroupCreated):
                await conn.execute(
                    "INSERT INTO groups (group_id, name, created_at) VALUES ($1, $2, $3)", e.group_id, e.name, at
                )
            elif isinstance(e, GroupRenamed):
                await conn.execute("UPDATE groups SET name = $2 WHERE group_id = $1", e.group_id, e.name)
            elif isinstance(e, GroupDeleted):
                await conn.execute("DELETE FROM group_members WHERE group_id = $1", e.group_id)
                await conn.execute("DELETE FROM groups WHERE group_id = $1", e.group_id)
            elif isinstance(e, MemberAdded):
                await conn.execute(
                    "INSERT INTO group_members (group_id, user_id, added_at, position) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT DO NOTHING",
                    e.group_id, e.user_id, at, r.position,
                )
            elif isinstance(e, MemberRemoved):
                await conn.execute(
                    "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2", e.group_id, e.user_id
                )

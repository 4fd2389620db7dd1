"""User and group commands: sign-up at login, service users, flags, groups and memberships.

Each command checks the read model, decides, and appends to the user's or group's stream at the
version it read, so two administrators editing one user at once get a conflict, not a lost edit.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from maestro.errors import Conflict, NotFound
from maestro.events.model import Event, Metadata, validate_event
from maestro.events.store import NO_STREAM, EventStore
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
    group_stream,
    user_id_for,
    user_stream,
)

# Sign-ups take turns under this advisory lock: "does anyone already have this email?" and "is
# there a default group yet?" must be answered and acted on by one process at a time.
SIGNUP_LOCK = 7283010
DEFAULT_GROUP = "default"
INITIAL_ADMIN_ACTOR = "system:initial-admins"

_USER_COLUMNS = (
    "u.user_id, u.kind, u.email, u.name, u.enabled, u.admin, u.created_at, "
    "ARRAY(SELECT m.group_id FROM group_members m WHERE m.user_id = u.user_id ORDER BY m.position) AS groups"
)


@dataclass(frozen=True, slots=True)
class UserView:
    user_id: str
    kind: str
    email: str | None
    name: str | None
    enabled: bool
    admin: bool
    created_at: dt.datetime
    groups: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.user_id, "kind": self.kind, "email": self.email, "name": self.name,
            "enabled": self.enabled, "admin": self.admin, "groups": list(self.groups),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class GroupView:
    group_id: str
    name: str
    created_at: dt.datetime
    members: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.group_id, "name": self.name, "members": list(self.members),
                "created_at": self.created_at.isoformat()}


def _user(row: Any) -> UserView:
    return UserView(*row[:7], groups=tuple(row["groups"]))


class UserService:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.pool = store.pool

    # ------------------------------------------------------------------ users
    async def get(self, user_id: str) -> UserView | None:
        row = await self.pool.fetchrow(f"SELECT {_USER_COLUMNS} FROM users u WHERE u.user_id = $1", user_id)
        return _user(row) if row is not None else None

    async def list(self) -> list[UserView]:
        rows = await self.pool.fetch(f"SELECT {_USER_COLUMNS} FROM users u ORDER BY u.created_at, u.user_id")
        return [_user(r) for r in rows]

    async def _version(self, stream: str, what: str) -> int:
        version = await self.store.stream_version(stream)
        if version is None:
            raise NotFound(f"no {what}")
        return version

    async def ensure_service_user(self, user_id: str, name: str, actor: Metadata, *, admin: bool = False) -> bool:
        """Create a token-only user unless ``user_id`` exists; True when it was created."""
        event = validate_event(ServiceUserCreated, {"user_id": user_id, "name": name, "admin": admin})
        if await self.get(user_id) is not None:
            return False
        try:
            await self.store.append(user_stream(user_id), NO_STREAM, [event], actor)
        except Conflict:
            return False  # created meanwhile by another process
        return True

    async def sign_in(
        self, issuer: str, subject: str, email: str | None, name: str | None, *, enable_new: bool,
        admin_emails: Collection[str] = (),
    ) -> tuple[UserView, bool]:
        """The user of an OIDC identity, signed up on first login; (user, created now).

        A person whose (verified) email is one of ``admin_emails`` -- the OAuth configuration's
        initial administrators -- signs up as an enabled administrator and joins the ``default``
        group (created if missing); everyone else is enabled only when ``enable_new``, and never
        an administrator. Being first proves nothing: whoever logs in first after OAuth is
        configured would otherwise own the instance.
        """
        user_id = user_id_for(issuer, subject)
        existing = await self.get(user_id)
        if existing is not None:
            if (existing.email, existing.name) != (email, name):
                version = await self._version(user_stream(user_id), f"user {user_id!r}")
                await self.store.append(user_stream(user_id), version,
                                        [UserProfileChanged(user_id=user_id, email=email, name=name)],
                                        Metadata(actor=f"user:{user_id}"))
                existing = await self.get(user_id)
            assert existing is not None
            return existing, False
        async with self.pool.acquire() as conn:
            # Session-level lock on a connection held for the duration: sign-ups are rare, and
            # "is anyone here yet?" must be answered and acted on by one process at a time.
            await conn.execute("SELECT pg_advisory_lock($1)", SIGNUP_LOCK)
            try:
                return await self._sign_up(user_id, issuer, subject, email, name, enable_new, admin_emails)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SIGNUP_LOCK)

    async def _sign_up(
        self, user_id: str, issuer: str, subject: str, email: str | None, name: str | None, enable_new: bool,
        admin_emails: Collection[str],
    ) -> tuple[UserView, bool]:
        existing = await self.get(user_id)  # the same login's other callback may have won the lock
        if existing is not None:
            return existing, False
        admin = email is not None and email.lower() in {e.lower() for e in admin_emails}
        if admin:
            # Emails change hands (a departed colleague's address given to someone new, under a
            # new subject): an address another user already signed up with makes nobody admin.
            admin = not await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))", email
            )
        meta = Metadata(actor=INITIAL_ADMIN_ACTOR if admin else f"user:{user_id}")
        # The default group first: a crash after it leaves the next sign-up to create the user.
        group_id = await self._default_group(meta) if admin else None
        signed_up = UserSignedUp(user_id=user_id, issuer=issuer, subject=subject, email=email, name=name,
                                 enabled=admin or enable_new, admin=admin)
        await self.store.append(user_stream(user_id), NO_STREAM, [signed_up], meta)
        if group_id is not None:
            await self.add_member(group_id, user_id, meta)
        user = await self.get(user_id)
        assert user is not None
        return user, True

    async def _default_group(self, meta: Metadata) -> str:
        found = await self.pool.fetchval("SELECT group_id FROM groups WHERE lower(name) = $1", DEFAULT_GROUP)
        if found is not None:
            return found
        taken = await self.store.stream_version(group_stream(DEFAULT_GROUP)) is not None
        return (await self.create_group(DEFAULT_GROUP, meta, group_id=None if taken else DEFAULT_GROUP)).group_id

    async def change(self, user_id: str, actor: Metadata, *, enabled: bool | None = None,
                     admin: bool | None = None) -> UserView:
        """Enable, disable, promote or demote; no event for what is already so."""
        user = await self.get(user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}")
        if actor.actor == f"user:{user_id}" and (enabled is False or admin is False):
            raise Conflict("you cannot disable or demote yourself: ask another administrator")
        events: list[Event] = []
        if enabled is not None and enabled != user.enabled:
            events.append(UserEnabled(user_id=user_id) if enabled else UserDisabled(user_id=user_id))
        if admin is not None and admin != user.admin:
            events.append(UserPromoted(user_id=user_id) if admin else UserDemoted(user_id=user_id))
        if events:
            version = await self._version(user_stream(user_id), f"user {user_id!r}")
            await self.store.append(user_stream(user_id), version, events, actor)
            user = await self.get(user_id)
            assert user is not None
        return user

    # ------------------------------------------------------------------ groups
    async def groups(self) -> list[GroupView]:
        rows = await self.pool.fetch(
            "SELECT g.group_id, g.name, g.created_at, ARRAY(SELECT m.user_id FROM group_members m "
            "WHERE m.group_id = g.group_id ORDER BY m.position) AS members FROM groups g ORDER BY lower(g.name)"
        )
        return [GroupView(r[0], r[1], r[2], tuple(r[3])) for r in rows]

    async def group(self, group_id: str) -> GroupView:
        row = await self.pool.fetchrow(
            "SELECT g.group_id, g.name, g.created_at, ARRAY(SELECT m.user_id FROM group_members m "
            "WHERE m.group_id = g.group_id ORDER BY m.position) AS members FROM groups g WHERE g.group_id = $1",
            group_id,
        )
        if row is None:
            raise NotFound(f"no group {group_id!r}")
        return GroupView(row[0], row[1], row[2], tuple(row[3]))

    async def group_exists(self, group_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM groups WHERE group_id = $1)", group_id))

    async def create_group(self, name: str, actor: Metadata, *, group_id: str | None = None) -> GroupView:
        group_id = group_id or f"g{secrets.token_hex(6)}"
        event = validate_event(GroupCreated, {"group_id": group_id, "name": name})
        await self.store.append(group_stream(group_id), NO_STREAM, [event], actor)
        return await self.group(group_id)

    async def rename_group(self, group_id: str, name: str, actor: Metadata) -> GroupView:
        group = await self.group(group_id)
        if group.name != name:
            event = validate_event(GroupRenamed, {"group_id": group_id, "name": name})
            await self._append_group(group_id, event, actor)
        return await self.group(group_id)

    async def delete_group(self, group_id: str, actor: Metadata) -> None:
        await self.group(group_id)
        # Live or deleted: a deleted table can be restored, and would come back without a group.
        tables = await self.pool.fetchval(
            "SELECT count(*) FROM catalog_tables WHERE spec->>'group_id' = $1", group_id
        )
        if tables:
            raise Conflict(f"group {group_id!r} owns {tables} table(s) (live or deleted): move them first",
                           tables=tables)
        await self._append_group(group_id, GroupDeleted(group_id=group_id), actor)

    async def add_member(self, group_id: str, user_id: str, actor: Metadata) -> GroupView:
        group = await self.group(group_id)
        if await self.get(user_id) is None:
            raise NotFound(f"no user {user_id!r}")
        if user_id not in group.members:
            await self._append_group(group_id, MemberAdded(group_id=group_id, user_id=user_id), actor)
        return await self.group(group_id)

    async def remove_member(self, group_id: str, user_id: str, actor: Metadata) -> GroupView:
        group = await self.group(group_id)
        if user_id not in group.members:
            raise NotFound(f"user {user_id!r} is not a member of group {group_id!r}")
        await self._append_group(group_id, MemberRemoved(group_id=group_id, user_id=user_id), actor)
        return await self.group(group_id)

    async def _append_group(self, group_id: str, event: Event, actor: Metadata) -> None:
        version = await self._version(group_stream(group_id), f"group {group_id!r}")
        await self.store.append(group_stream(group_id), version, [event], actor)

"""People and groups: who may log in, who is an administrator, who belongs to which group.

Streams: ``user-<user id>`` and ``group-<group id>`` (memberships live on the group's stream).
"Who granted whom admin, when" is a query over ``UserPromoted`` (and ``UserSignedUp`` with
``admin``): the event names the user, its metadata's ``actor`` the administrator, its
``occurred_at`` the time.

A person's user id is derived from their OIDC identity (:func:`user_id_for`), so two callbacks of
one first login racing each other append to the same stream and one of them loses cleanly.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import AfterValidator, Field

from maestro.events.model import Event

_USER_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")  # fullmatch: "$" would allow a trailing newline


def _user_id(value: str) -> str:
    if not _USER_ID.fullmatch(value):
        raise ValueError("user ids are 1-63 lowercase letters, digits, '.', '_' and '-'")
    return value


UserId = Annotated[str, AfterValidator(_user_id)]
GroupName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]


def user_id_for(issuer: str, subject: str) -> str:
    """A stable id for an OIDC identity: emails change hands, (issuer, subject) never does."""
    digest = hashlib.sha256(f"{issuer.rstrip('/')}\n{subject}".encode()).hexdigest()
    return f"u{digest[:15]}"


def user_stream(user_id: str) -> str:
    return f"user-{user_id}"


def group_stream(group_id: str) -> str:
    return f"group-{group_id}"


class UserSignedUp(Event):
    """A person logged in for the first time. ``admin`` is true only for the very first one."""

    user_id: UserId
    issuer: str
    subject: str
    email: str | None
    name: str | None = None
    enabled: bool
    admin: bool = False


class ServiceUserCreated(Event):
    """A user that never logs in and acts through API tokens (the bootstrap admin, CI, scripts)."""

    user_id: UserId
    name: str
    admin: bool = False


class UserProfileChanged(Event):
    """The identity provider reported a new email or name at login."""

    user_id: UserId
    email: str | None
    name: str | None = None


class UserEnabled(Event):
    user_id: UserId


class UserDisabled(Event):
    """From now on the user's sessions and tokens are refused (they are not deleted)."""

    user_id: UserId


class UserPromoted(Event):
    """Made an administrator; the metadata's actor is who granted it."""

    user_id: UserId


class UserDemoted(Event):
    user_id: UserId


class GroupCreated(Event):
    group_id: str
    name: GroupName


class GroupRenamed(Event):
    group_id: str
    name: GroupName


class GroupDeleted(Event):
    group_id: str


class MemberAdded(Event):
    group_id: str
    user_id: UserId


class MemberRemoved(Event):
    group_id: str
    user_id: UserId

"""Who is making a request, as tokens and sessions resolve it.

A principal is rebuilt from the users projection on every request (one indexed query joined with
the credential's own row), never cached: disabling a user or removing them from a group takes
effect on their very next request, on every replica.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from maestro.events.model import Metadata


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    admin: bool
    groups: tuple[str, ...] = ()  # in the order the user joined them: groups[0] is "their first"
    token_id: str | None = None
    session_id: str | None = None

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"

    def member_of(self, group_id: str) -> bool:
        return group_id in self.groups

    def metadata(self, **extra: object) -> Metadata:
        via = {"token_id": self.token_id} if self.token_id else {}
        if self.session_id:
            via = {"session_id": self.session_id}
        return Metadata(actor=self.actor, extra={**via, **extra})


def secret_hash(secret: str) -> str:
    """Tokens and session ids carry 256 random bits: a plain SHA-256 is a safe verifier."""
    return hashlib.sha256(secret.encode()).hexdigest()


# The user's standing, joined into each credential query: ($user_id_column) -> enabled, admin, groups.
USER_STANDING = (
    "u.enabled, u.admin, "
    "ARRAY(SELECT m.group_id FROM group_members m WHERE m.user_id = u.user_id ORDER BY m.position) AS groups"
)

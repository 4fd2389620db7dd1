"""Authentication events: API tokens (users, groups and sessions come with the login work)."""

from __future__ import annotations

import datetime as dt

from maestro.events.model import Event


class ApiTokenCreated(Event):
    """Only a hash of the secret is recorded; the secret is shown once, to its creator."""

    token_id: str
    user_id: str
    name: str
    secret_hash: str
    admin: bool = False
    expires_at: dt.datetime | None = None


class ApiTokenRevoked(Event):
    token_id: str

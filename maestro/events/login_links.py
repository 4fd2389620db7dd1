"""One-time login links (local mode): ``maestro serve`` and ``maestro login-link`` print one.

Like an API token, only a SHA-256 of the link's secret is recorded. A link is consumed by
appending ``LoginLinkUsed`` at version 2 of its stream, so two browsers racing with one link
collide on the stream's version: exactly one gets a session.
"""

from __future__ import annotations

import datetime as dt

from maestro.events.model import Event


class LoginLinkCreated(Event):
    link_id: str
    user_id: str
    secret_hash: str
    expires_at: dt.datetime


class LoginLinkUsed(Event):
    """The link opened this session; it can never be used again."""

    link_id: str
    session_id: str
    address: str | None = None

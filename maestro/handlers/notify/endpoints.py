"""A table's callback endpoint: its signing secret (shown once), rotation, disabling and enabling.

The endpoint of a table is the stream ``webhook-<table id>``. Its secret is ``whsec_`` and 32
random bytes in base64 (the Standard Webhooks form), sealed with the master secret before it is
appended, like every stored credential. The plaintext is returned exactly once: in the response
to the save that gave the table its first ``notify_url`` (``callback.secret``), or to
``POST /tables/{id}/callback/rotate``. A rotation also enables an endpoint that a ``410 Gone``
disabled; so does saving the table with a different ``notify_url``, or
``POST /tables/{id}/callback/enable``.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from maestro.adapters.secrets import SecretBox
from maestro.errors import ConcurrencyConflict, NotFound
from maestro.events.deliveries import (
    WebhookEndpointCreated,
    WebhookEndpointDisabled,
    WebhookEndpointEnabled,
    WebhookSecretRotated,
    endpoint_stream,
)
from maestro.events.model import Metadata
from maestro.events.store import NO_STREAM, EventStore


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _context(table_id: str) -> str:
    return f"{endpoint_stream(table_id)}/secret"


@dataclass(frozen=True, slots=True)
class Endpoint:
    table_id: str
    sealed_secret: str
    enabled: bool
    disabled_reason: str | None
    disabled_url: str | None
    rotated_at: dt.datetime
    version: int

    def public(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "disabled_reason": self.disabled_reason,
                "secret_rotated_at": self.rotated_at.isoformat()}


class Endpoints:
    def __init__(self, store: EventStore, box: SecretBox) -> None:
        self.store = store
        self.box = box

    async def get(self, table_id: str) -> Endpoint | None:
        row = await self.store.pool.fetchrow(
            "SELECT table_id, secret, enabled, disabled_reason, disabled_url, rotated_at, version "
            "FROM webhook_endpoints WHERE table_id = $1", table_id)
        return Endpoint(*row.values()) if row is not None else None

    def secret_of(self, endpoint: Endpoint) -> str:
        return self.box.decrypt(endpoint.sealed_secret, context=_context(endpoint.table_id))

    async def ensure(self, table_id: str, actor: Metadata) -> str | None:
        """Create the table's endpoint unless it exists; the new secret's plaintext, or None."""
        if await self.get(table_id) is not None:
            return None
        secret = new_secret()
        sealed = self.box.encrypt(secret, context=_context(table_id))
        try:
            await self.store.append(endpoint_stream(table_id), NO_STREAM,
                                    [WebhookEndpointCreated(table_id=table_id, secret=sealed)], actor)
        except ConcurrencyConflict:
            return None  # created at the same moment by someone else, who got the secret
        return secret

    async def rotate(self, table_id: str, actor: Metadata) -> str:
        """A new secret (returned once), which also enables the endpoint."""
        endpoint = await self.get(table_id)
        secret = new_secret()
        sealed = self.box.encrypt(secret, context=_context(table_id))
        if endpoint is None:
            await self.store.append(endpoint_stream(table_id), NO_STREAM,
                                    [WebhookEndpointCreated(table_id=table_id, secret=sealed)], actor)
        else:
            await self.store.append(endpoint_stream(table_id), endpoint.version,
                                    [WebhookSecretRotated(table_id=table_id, secret=sealed)], actor)
        return secret

    async def enable(self, table_id: str, actor: Metadata, why: str = "enabled") -> bool:
        """Enable a disabled endpoint; False when there was nothing to enable."""
        endpoint = await self.get(table_id)
        if endpoint is None:
            raise NotFound(f"table {table_id} has no callback endpoint (it has never had a notify_url)")
        if endpoint.enabled:
            return False
        await self.store.append(endpoint_stream(table_id), endpoint.version,
                                [WebhookEndpointEnabled(table_id=table_id, why=why)], actor)  # type: ignore[arg-type]
        return True

    async def disable(self, table_id: str, url: str, status_code: int, delivery_id: str, actor: Metadata,
                      *, expected_version: int) -> bool:
        """Disable the endpoint as it was when the answer's request was signed (``expected_version``).
        False when it changed since — rotated or enabled while the request was in flight: that
        410 answered the old endpoint, and must not disable the new one."""
        endpoint = await self.get(table_id)
        if endpoint is not None and not endpoint.enabled:
            return True
        try:
            await self.store.append(endpoint_stream(table_id), expected_version, [WebhookEndpointDisabled(
                table_id=table_id, delivery_id=delivery_id, url=url, status_code=status_code,
                reason=f"{url} answered {status_code} Gone",
            )], actor)
        except ConcurrencyConflict:
            return False
        return True

    async def after_save(self, table_id: str, url: str | None, actor: Metadata) -> dict[str, Any] | None:
        """After a table save: create the endpoint of a first ``notify_url`` (its secret, once),
        and enable an endpoint disabled by another URL than the one saved now."""
        if url is None:
            return None
        secret = await self.ensure(table_id, actor)
        if secret is not None:
            return {"secret": secret, "note": "shown once: keep it to verify webhook-signature; "
                                              "POST /api/v1/tables/{id}/callback/rotate makes a new one"}
        endpoint = await self.get(table_id)
        if endpoint is not None and not endpoint.enabled and endpoint.disabled_url not in (None, url):
            await self.enable(table_id, actor, why="url_changed")
        return None

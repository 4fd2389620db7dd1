"""The signed push webhook (``POST /api/v1/git/webhook``), GitHub's way: an HMAC-SHA256 of the raw
body with the shared secret, hex, in ``X-Hub-Signature-256: sha256=<hex>``
(docs.github.com "Validating webhook deliveries"; Gitea and GitLab-compatible senders do the same).

A delivery that verifies is recorded as ``GitWebhookReceived`` on ``git-webhook-<delivery id>``:
the leader's git reactor follows it and fetches at once, whichever replica took the request, and a
redelivery of the same id is a conflict, not a second fetch. A delivery that does not verify
appends nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Any

import orjson

from maestro.errors import ConcurrencyConflict, NotFound, Unauthenticated
from maestro.events.config import GitSection
from maestro.events.git import GitWebhookReceived
from maestro.events.model import Metadata
from maestro.events.store import NO_STREAM, EventStore

_DELIVERY = re.compile(r"[A-Za-z0-9._-]{1,100}")


class SignatureInvalid(Unauthenticated):
    """The webhook's signature does not match the body: nothing was done."""

    code = "signature_invalid"


class WebhookNotConfigured(NotFound):
    """No git repository or webhook secret is configured."""

    code = "webhook_not_configured"


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value of ``body``.

    >>> signature("It's a Secret to Everybody", b"Hello, World!")
    'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str | None, section: GitSection, body: bytes, header: str | None) -> None:
    if not section.repo_url or not secret:
        raise WebhookNotConfigured("the git webhook is not configured: set git.repo_url and git.webhook_secret")
    if not header or not hmac.compare_digest(header.strip(), signature(secret, body)):
        raise SignatureInvalid("the X-Hub-Signature-256 header does not match the body and the webhook secret")


async def receive(store: EventStore, section: GitSection, body: bytes, headers: Any) -> dict[str, Any]:
    """Record a verified delivery; what to answer."""
    kind = headers.get("X-GitHub-Event") or headers.get("X-Gitea-Event") or "push"
    if kind == "ping":
        return {"received": True, "event": "ping"}
    try:
        payload = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        payload = {}
    ref = str(payload.get("ref", "")) if isinstance(payload, dict) else ""
    after = str(payload.get("after", "")) if isinstance(payload, dict) else ""
    if ref and ref != f"refs/heads/{section.branch}":
        return {"received": True, "ignored": f"{ref} is not refs/heads/{section.branch}"}
    delivery = headers.get("X-GitHub-Delivery") or headers.get("X-Gitea-Delivery") or ""
    if not _DELIVERY.fullmatch(delivery):
        delivery = uuid.uuid4().hex
    event = GitWebhookReceived(ref=ref[:255], after=after[:64], delivery=delivery)
    try:
        await store.append(f"git-webhook-{delivery}", NO_STREAM, [event], Metadata(actor="system:git-webhook"))
    except ConcurrencyConflict:
        return {"received": True, "duplicate": True, "delivery": delivery}
    return {"received": True, "delivery": delivery}

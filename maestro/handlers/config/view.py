"""The live configuration: an in-process view that every component reads at the moment of use.

The original read its credentials once at start-up, so every change needed a restart. Here the
view is loaded from the ``config_entries`` read model at start and then kept current two ways:

- this process's own appends are applied at once (``store.on_append``), so the request after an
  administrator's change already sees it;
- a subscription to the config event types applies what other processes append (another replica,
  the ``maestro config set`` CLI), woken by NOTIFY, so they arrive within milliseconds.

Both paths may deliver the same event; each event carries its stream's whole state, so the view
keeps, per stream, the highest version seen and nothing can be applied twice or out of order.

Secrets stay sealed in the view. :meth:`ConfigView.secret` opens one at the moment of use; callers
hold the plaintext no longer than the call that needs it and never log it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import SecretStr, ValidationError

from maestro.adapters.secrets import SecretBox
from maestro.errors import SecretUnavailable
from maestro.events.config import (
    CONFIG_EVENT_TYPES,
    SECTIONS,
    ConfigRemoved,
    ConfigSecretsRotated,
    DatabaseSection,
    OAuthSection,
    PricingSection,
    Section,
    config_stream,
)
from maestro.events.model import RecordedEvent
from maestro.events.store import AppendResult, EventStore
from maestro.health import Health
from maestro.logs import remove_redaction_source

log = logging.getLogger(__name__)

ChangeListener = Callable[[str, "str | None"], None]


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One config stream as of ``version``: settings in clear, secrets as ciphertext."""

    stream_id: str
    section: str
    name: str | None
    settings: dict[str, Any]
    secrets: dict[str, str]
    version: int
    deleted: bool = False
    updated_at: dt.datetime | None = None
    updated_by: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ConfigEntry:
        return cls(
            row["stream_id"], row["section"], row["name"], orjson.loads(row["settings"]),
            orjson.loads(row["secrets"]), row["version"], row["deleted"], row["updated_at"], row["updated_by"],
        )

    @classmethod
    def from_recorded(cls, r: RecordedEvent) -> ConfigEntry:
        e = r.event
        removed = isinstance(e, ConfigRemoved)
        return cls(
            r.stream_id, e.section, e.name, {} if removed else dict(e.settings),
            {} if removed else dict(e.secrets), r.version, removed, r.occurred_at, r.metadata.actor,
        )

    def context(self, field: str) -> str:
        """The associated data a secret of this stream is sealed with, e.g. config-slack/webhook_url."""
        return f"{self.stream_id}/{field}"

    def model(self) -> Section:
        cls = SECTIONS[self.section]
        try:
            return cls.model_validate(self.settings)
        except ValidationError:
            # Stored by an older release whose rules were looser: show it rather than fail reads.
            return cls.model_construct(**self.settings)


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """What the login code needs, read at each login so a change applies to the next one."""

    issuer: str
    client_id: str
    client_secret: SecretStr  # masked in repr and logs; .get_secret_value() at the token request
    redirect_uri: str | None
    allowed_domains: tuple[str, ...]
    auto_enable_domains: tuple[str, ...]
    initial_admins: tuple[str, ...] = ()


class ConfigView:
    def __init__(self, box: SecretBox, *, default_price_per_tib: float) -> None:
        self.box = box
        self.default_price_per_tib = default_price_per_tib
        self._entries: dict[str, ConfigEntry] = {}
        self._listeners: list[ChangeListener] = []
        self._plaintexts: frozenset[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------ keeping current
    async def load(self, pool: Any) -> None:
        rows = await pool.fetch(
            "SELECT stream_id, section, name, settings::text, secrets::text, version, deleted, "
            "updated_at, updated_by FROM config_entries"
        )
        for row in rows:
            self._put(ConfigEntry.from_row(row))

    def apply(self, recorded: RecordedEvent) -> None:
        if recorded.type not in CONFIG_EVENT_TYPES:
            return
        known = self._entries.get(recorded.stream_id)
        if known is not None and known.version >= recorded.version:
            return  # seen already, through the other path
        e = recorded.event
        if isinstance(e, ConfigSecretsRotated) and e.key_id != self.box.key_id:
            log.error(
                "stored credentials were re-encrypted under another master secret: restart this "
                "process with the new secret file",
                extra={"stream": recorded.stream_id, "new_key_id": e.key_id, "this_key_id": self.box.key_id},
            )
        entry = ConfigEntry.from_recorded(recorded)
        self._put(entry)
        log.info("configuration changed", extra={"stream": recorded.stream_id, "version": recorded.version,
                                                 "type": recorded.type, "actor": entry.updated_by})
        for listener in list(self._listeners):
            try:
                listener(entry.section, entry.name)
            except Exception:  # one faulty listener must not stop the others or the append
                log.exception("configuration listener failed", extra={"section": entry.section})

    def on_append(self, result: AppendResult) -> None:
        for recorded in result.events:
            self.apply(recorded)

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(section, database name or None)`` after every change, from any process."""
        self._listeners.append(listener)

    def off_change(self, listener: ChangeListener) -> None:
        """Stop calling ``listener`` (its owner is closing)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def follow(self, store: EventStore, after_position: int, health: Health | None = None) -> None:
        health = health or Health()

        def alive() -> None:
            health.ok("config")

        async def run() -> None:
            position, delay = after_position, 0.5
            while not self._stop.is_set():
                try:
                    async for batch in store.subscribe_batches(
                        position, types=sorted(CONFIG_EVENT_TYPES), stop=self._stop, on_read=alive
                    ):
                        for recorded in batch:
                            self.apply(recorded)
                        position, delay = batch[-1].position, 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a database outage: resume from the last event seen
                    health.down("config", exc)
                    log.warning("configuration follower failed; resuming", extra={"error": str(exc)})
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=delay)
                    delay = min(delay * 2, 5.0)

        self._task = asyncio.get_running_loop().create_task(run(), name="config-view")

    async def stop(self) -> None:
        remove_redaction_source(self.plaintexts)
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _put(self, entry: ConfigEntry) -> None:
        self._entries[entry.stream_id] = entry
        self._plaintexts = None

    # ------------------------------------------------------------------ reading
    def entry(self, section: str, name: str | None = None) -> ConfigEntry | None:
        """The live entry of a section (or database), None when never set or removed."""
        entry = self._entries.get(config_stream(section, name))
        return None if entry is None or entry.deleted else entry

    def entries(self) -> list[ConfigEntry]:
        return sorted((e for e in self._entries.values() if not e.deleted), key=lambda e: e.stream_id)

    def get(self, section: str) -> Section:
        """A section's settings (secrets excluded), with defaults when it was never set."""
        if section == "databases":
            raise ValueError("databases are many: use database(name) or databases()")
        entry = self.entry(section)
        return entry.model() if entry is not None else SECTIONS[section]()

    def databases(self) -> dict[str, DatabaseSection]:
        return {e.name: e.model() for e in self.entries() if e.section == "databases" and e.name}  # type: ignore[misc]

    def database(self, name: str) -> DatabaseSection | None:
        entry = self.entry("databases", name)
        return entry.model() if entry is not None else None  # type: ignore[return-value]

    def is_set(self, section: str, field: str, *, name: str | None = None) -> bool:
        entry = self.entry(section, name)
        return entry is not None and field in entry.secrets

    def secret(self, section: str, field: str, *, name: str | None = None) -> str | None:
        """Open one secret now (None when not set). Raises SecretUnavailable if it cannot be opened."""
        entry = self.entry(section, name)
        if entry is None or field not in entry.secrets:
            return None
        return self.box.decrypt(entry.secrets[field], context=entry.context(field))

    @property
    def price_per_tib(self) -> float:
        """USD per TiB: the configured price, else the start-up setting (``MAESTRO_PRICE_PER_TIB``)."""
        configured = self.get("pricing")
        assert isinstance(configured, PricingSection)
        return configured.price_per_tib if configured.price_per_tib is not None else self.default_price_per_tib

    def oauth_client(self) -> OAuthClient | None:
        """The OAuth/OIDC client, or None until a client id and secret are configured."""
        oauth = self.get("oauth")
        assert isinstance(oauth, OAuthSection)
        secret = self.secret("oauth", "client_secret")
        if not oauth.client_id or secret is None:
            return None
        return OAuthClient(
            oauth.issuer, oauth.client_id, SecretStr(secret), oauth.redirect_uri,
            tuple(oauth.allowed_domains), tuple(oauth.auto_enable_domains), tuple(oauth.initial_admins),
        )

    # ------------------------------------------------------------------ checking
    def unreadable(self) -> list[tuple[ConfigEntry, str, SecretUnavailable]]:
        """Every stored secret the current master secret cannot open, with the reason."""
        failures = []
        for entry in self.entries():
            for field, token in sorted(entry.secrets.items()):
                try:
                    self.box.decrypt(token, context=entry.context(field))
                except SecretUnavailable as exc:
                    failures.append((entry, field, exc))
        return failures

    def plaintexts(self) -> Iterable[str]:
        """Every secret in use, opened (cached until the next change): for the log redactor only."""
        if self._plaintexts is None:
            found: set[str] = set()
            for entry in self.entries():
                for field, token in entry.secrets.items():
                    with contextlib.suppress(SecretUnavailable):
                        found.update(_redaction_forms(self.box.decrypt(token, context=entry.context(field))))
            self._plaintexts = frozenset(found)
        return self._plaintexts


def _redaction_forms(plaintext: str) -> list[str]:
    """The plaintext, and the parts of a service-account key that could be logged on their own."""
    forms = [plaintext]
    if plaintext.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            key = orjson.loads(plaintext)
            if isinstance(key, dict):
                forms += [str(key[k]) for k in ("private_key", "private_key_id") if key.get(k)]
    return [f for f in forms if len(f) >= 4]  # masking "ab" everywhere would wreck every line

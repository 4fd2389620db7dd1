"""Configuration commands: change a section or a database, rotate the master secret, recover.

Every command decides against the read model, encrypts new secrets, and appends one event that
carries the stream's whole state (see ``maestro.events.config``). Plaintext secrets arrive as
``SecretStr`` or ``str``, are checked, sealed with the stream and field as context
(``config-slack/webhook_url``) and dropped; nothing here logs or returns one.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError

from maestro.adapters.secrets import SecretBox, rotate
from maestro.errors import Conflict, NotFound, ValidationFailed
from maestro.events.config import (
    DATABASE_NAME,
    SECTIONS,
    ConfigChanged,
    ConfigRemoved,
    ConfigSecretsCleared,
    ConfigSecretsRotated,
    config_stream,
)
from maestro.events.model import Metadata
from maestro.events.store import NO_STREAM, EventStore
from maestro.health import Health
from maestro.handlers.config.view import ConfigEntry, ConfigView
from maestro.handlers.config.secret_file import open_secret_box, verify_stored_secrets
from maestro.logs import add_redaction_source
from maestro.settings import Settings

__all__ = ["ConfigService", "RotationReport", "open_config", "open_secret_box", "public_view"]


async def open_config(
    settings: Settings, store: EventStore, *, follow: bool = True, check: bool = True,
    health: Health | None = None,
) -> tuple[ConfigView, ConfigService]:
    """Open the master secret, load the live configuration and (``check``) prove the secret opens it.

    ``check=False`` is for ``maestro secrets reset`` only: recovering from a lost secret needs a
    runtime that starts although the stored credentials cannot be opened.
    """
    opened = open_secret_box(settings)
    view = ConfigView(opened.box, default_price_per_tib=settings.price_per_tib)
    # The position first, then the table: whatever commits in between is delivered again by the
    # subscription and skipped by version, never missed.
    after = await store.head_position()
    await view.load(store.pool)
    if check:
        verify_stored_secrets(view, opened)
    store.on_append(view.on_append)
    add_redaction_source(view.plaintexts)
    if follow:
        view.follow(store, after, health)
    return view, ConfigService(store, opened.box, view)


@dataclass(frozen=True, slots=True)
class RotationReport:
    old_key_id: str
    new_key_id: str
    streams: int  # streams that got a ConfigSecretsRotated event
    secrets: int  # secrets now sealed under the new key


def public_view(section: str, entry: ConfigEntry | None, *, name: str | None = None) -> dict[str, Any]:
    """A section or database as the API and CLI show it: secrets only as ``{"set": bool}``."""
    cls = SECTIONS[section]
    model = entry.model() if entry is not None else cls.model_construct()
    values = model.model_dump(mode="json")
    secrets = {f: {"set": entry is not None and f in entry.secrets} for f in cls.secret_fields}
    configured = entry is not None and all(
        secrets[f]["set"] if f in secrets else values.get(f) not in (None, "", []) for f in cls.required
    ) and (not (any_of := getattr(cls, "required_any", ())) or any(secrets[f]["set"] for f in any_of))
    head = {"name": name} if section == "databases" else {"section": section}
    return {
        **head, **values, **secrets, "configured": configured,
        "version": entry.version if entry is not None else 0,
        "updated_at": entry.updated_at.isoformat() if entry is not None and entry.updated_at else None,
        "updated_by": entry.updated_by if entry is not None else None,
    }


class ConfigService:
    def __init__(self, store: EventStore, box: SecretBox, view: ConfigView) -> None:
        self.store = store
        self.box = box
        self.view = view

    async def current(self, section: str, name: str | None = None) -> ConfigEntry | None:
        """The entry as the read model has it (authoritative for the expected version)."""
        row = await self.store.pool.fetchrow(
            "SELECT stream_id, section, name, settings::text, secrets::text, version, deleted, "
            "updated_at, updated_by FROM config_entries WHERE stream_id = $1",
            config_stream(section, name),
        )
        return ConfigEntry.from_row(row) if row is not None else None

    # ------------------------------------------------------------------ sections
    async def set_section(
        self, section: str, values: Mapping[str, Any], metadata: Metadata, *, partial: bool,
        expected_version: int | None = None, clear: Iterable[str] = (),
    ) -> ConfigEntry | None:
        """Replace (``partial=False``) or merge a section's settings; blank secrets keep the old."""
        if section not in SECTIONS or section == "databases":
            raise NotFound(f"no configuration section {section!r}; known: {', '.join(sorted(SECTIONS))}")
        current = await self.current(section)
        return await self._change(section, None, current, values, metadata, partial, expected_version, clear)

    # ------------------------------------------------------------------ databases
    async def add_database(self, name: Any, values: Mapping[str, Any], metadata: Metadata) -> ConfigEntry | None:
        if not isinstance(name, str) or not DATABASE_NAME.fullmatch(name):
            message = "lowercase letters, digits, '_' and '-', starting with a letter (63 at most)"
            raise ValidationFailed(f"name: {message}", problems=[{"field": "name", "message": message}])
        current = await self.current("databases", name)
        if current is not None and not current.deleted:
            raise Conflict(f"a database named {name!r} already exists", name=name)
        return await self._change("databases", name, current, values, metadata, False, None, ())

    async def change_database(
        self, name: str, values: Mapping[str, Any], metadata: Metadata, *,
        expected_version: int | None = None, clear: Iterable[str] = (),
    ) -> ConfigEntry | None:
        current = await self._live_database(name)
        return await self._change("databases", name, current, values, metadata, True, expected_version, clear)

    async def remove_database(self, name: str, metadata: Metadata) -> None:
        current = await self._live_database(name)
        users = await self.store.pool.fetch(
            "SELECT table_id, dataset || '.' || name AS table FROM catalog_tables WHERE NOT deleted "
            "AND (spec->'import'->>'source_database' = $1 OR spec->'db_export'->>'database' = $1) "
            "ORDER BY 2 LIMIT 20",
            name,
        )
        if users:
            tables = [r["table"] for r in users]
            raise Conflict(f"database {name!r} is used by tables {', '.join(tables)}", tables=tables)
        await self.store.append(
            current.stream_id, current.version, [ConfigRemoved(section="databases", name=name)], metadata
        )

    async def _live_database(self, name: str) -> ConfigEntry:
        current = await self.current("databases", name)
        if current is None or current.deleted:
            raise NotFound(f"no database named {name!r}", name=name)
        return current

    # ------------------------------------------------------------------ the decision
    async def _change(
        self, section: str, name: str | None, current: ConfigEntry | None, values: Mapping[str, Any],
        metadata: Metadata, partial: bool, expected_version: int | None, clear: Iterable[str],
    ) -> ConfigEntry | None:
        cls = SECTIONS[section]
        live = current if current is not None and not current.deleted else None
        version = current.version if current is not None else None
        if expected_version is not None and expected_version != (version or 0):
            raise Conflict(
                f"the configuration is at version {version or 0}, not {expected_version}: read it again",
                expected=expected_version, actual=version or 0,
            )
        clear = sorted(set(clear))
        problems = [{"field": f, "message": "not a secret field"} for f in clear if f not in cls.secret_fields]
        plain = {k: v for k, v in values.items() if k not in cls.secret_fields}
        given: dict[str, str | None] = {}
        for field in cls.secret_fields:
            try:
                given[field] = _plaintext(values.get(field))
            except ValueError as exc:
                problems.append({"field": field, "message": str(exc)})
        merged = {**(live.settings if live is not None and partial else {}), **plain}
        try:
            settings = cls.model_validate(merged).model_dump(mode="json")
        except ValidationError as exc:
            problems += _problems(exc)
            settings = {}
        stream = config_stream(section, name)
        secrets = {k: v for k, v in (live.secrets if live is not None else {}).items() if k not in clear}
        changed_secrets = list(clear)
        for field, value in sorted(given.items()):
            if value is None:
                continue  # blank or absent: keep the stored one
            try:
                cls.check_secret(field, value)
            except ValueError as exc:
                problems.append({"field": field, "message": str(exc)})
                continue
            if field in secrets and self._same(secrets[field], f"{stream}/{field}", value):
                continue
            secrets[field] = self.box.encrypt(value, context=f"{stream}/{field}")
            changed_secrets.append(field)
        if problems:
            raise ValidationFailed("; ".join(f"{p['field']}: {p['message']}" for p in problems), problems=problems)
        old = live.settings if live is not None else {}
        changed = sorted({k for k in {*settings, *old} if settings.get(k) != old.get(k)} | set(changed_secrets))
        if live is not None and not changed:
            return live  # nothing to record: the same PUT twice appends once
        event = ConfigChanged(section=section, name=name, settings=settings, secrets=secrets, changed=changed)
        await self.store.append(stream, NO_STREAM if version is None else version, [event], metadata)
        return await self.current(section, name)

    def _same(self, token: str, context: str, value: str) -> bool:
        if not self.box.can_decrypt(token, context=context):
            return False  # unreadable (lost secret): the new value replaces it
        return hmac.compare_digest(self.box.decrypt(token, context=context).encode(), value.encode())

    # ------------------------------------------------------------------ the master secret
    async def rotate(self, new_box: SecretBox, metadata: Metadata) -> RotationReport:
        """Re-encrypt every stored secret under ``new_box``, one event per stream.

        Every secret is opened before anything is appended (``adapters.secrets.rotate``), so an
        unreadable one aborts the rotation untouched; a rotation interrupted half-way is finished
        by running it again (streams already under the new key are skipped).
        """
        entries = [e for e in await self._all() if e.secrets and not e.deleted]
        pairs = [(token, e.context(f)) for e in entries for f, token in sorted(e.secrets.items())]
        rotated = iter(rotate(pairs, self.box, new_box))
        streams = 0
        for entry in entries:
            secrets = {f: next(rotated) for f in sorted(entry.secrets)}
            if secrets == entry.secrets:
                continue
            event = ConfigSecretsRotated(
                section=entry.section, name=entry.name, settings=entry.settings, secrets=secrets, key_id=new_box.key_id
            )
            await self.store.append(entry.stream_id, entry.version, [event], metadata)
            streams += 1
        return RotationReport(self.box.key_id, new_box.key_id, streams, len(pairs))

    async def clear_unreadable(self, metadata: Metadata) -> list[str]:
        """After the master secret is lost for good: record that the secrets it sealed are gone.

        Returns the ``stream/field`` names cleared; each must be entered again.
        """
        cleared_all: list[str] = []
        for entry in await self._all():
            if entry.deleted:
                continue
            lost = {f: t for f, t in entry.secrets.items() if not self.box.can_decrypt(t, context=entry.context(f))}
            if not lost:
                continue
            kept = {f: t for f, t in entry.secrets.items() if f not in lost}
            lost_key = sorted({t.split(".")[1] if t.count(".") == 2 else "unknown" for t in lost.values()})
            event = ConfigSecretsCleared(
                section=entry.section, name=entry.name, settings=entry.settings, secrets=kept,
                cleared=sorted(lost), lost_key_id=",".join(lost_key),
            )
            await self.store.append(entry.stream_id, entry.version, [event], metadata)
            cleared_all += [entry.context(f) for f in sorted(lost)]
        return cleared_all

    async def _all(self) -> list[ConfigEntry]:
        rows = await self.store.pool.fetch(
            "SELECT stream_id, section, name, settings::text, secrets::text, version, deleted, "
            "updated_at, updated_by FROM config_entries ORDER BY stream_id"
        )
        return [ConfigEntry.from_row(r) for r in rows]


def _plaintext(value: Any) -> str | None:
    """A secret as given: SecretStr or str; None, blank or ``{"set": ...}`` (a GET sent back) keep."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or isinstance(value, dict):
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value if value.strip() else None


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    """Field problems; a model-level rule names its field in its message ("dsn: ...")."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if not field and ": " in message:
            field, message = message.split(": ", 1)
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append({"field": field or "(body)", "message": message})
    return problems

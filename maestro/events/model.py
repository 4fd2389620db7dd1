"""Events: small frozen values named in the past tense.

Every event type is a pydantic model deriving from :class:`Event`. Subclassing registers the type
under its class name (the name stored in the log), so a reader can turn a stored row back into the
right class. A payload that changes shape gets a higher ``schema_version`` and an upcaster that
turns the old stored payload into the new one; stored events are never rewritten.

>>> class ExampleHappened(Event):
...     what: str
>>> ExampleHappened(what="x").type_name()
'ExampleHappened'
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from maestro.errors import InvalidEvent, UnknownEventType
from maestro.validation import describe

_REGISTRY: dict[str, type[Event]] = {}
# (type name, from schema version) -> function turning that version's payload into the next one's.
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class Event(BaseModel):
    """Base of every event. Subclasses are registered by class name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # pydantic builds generic/parametrized helper subclasses; only register concrete names.
        if "[" in cls.__name__ or cls.__dict__.get("__abstract__", False):
            return
        existing = _REGISTRY.get(cls.__name__)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"event type {cls.__name__!r} is registered twice")
        _REGISTRY[cls.__name__] = cls

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    def payload_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def upcaster(type_name: str, from_version: int) -> Callable[[Callable], Callable]:
    """Register a function that turns a ``type_name`` payload of ``from_version`` into the next.

    >>> @upcaster("ExampleRenamed", from_version=1)
    ... def _v1_to_v2(data):
    ...     return {**data, "new_name": data.pop("name")}
    """

    def register(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


def event_class(type_name: str, position: int | None = None) -> type[Event]:
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise UnknownEventType(type_name, position) from None


def registered_types() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


def decode(type_name: str, schema_version: int, data: str | bytes, position: int | None = None) -> Event:
    """Turn a stored payload (JSON text) into its event object, upcasting old versions."""
    cls = event_class(type_name, position)
    try:
        if schema_version == cls.schema_version:
            return cls.model_validate_json(data)
        payload = orjson.loads(data)
        version = schema_version
        while version < cls.schema_version:
            step = _UPCASTERS.get((type_name, version))
            if step is None:
                raise InvalidEvent(
                    f"no upcaster for {type_name} from schema version {version} "
                    f"to {cls.schema_version} (position {position})"
                )
            payload = step(payload)
            version += 1
        if version > cls.schema_version:
            raise InvalidEvent(
                f"{type_name} at position {position} has schema version {schema_version}, newer "
                f"than this Maestro's {cls.schema_version}: upgrade before reading the log"
            )
        return cls.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(
            f"stored {type_name} at position {position} does not validate: {describe(exc)[0]}"
        ) from exc


def validate_event(cls: type[Event], payload: dict[str, Any]) -> Event:
    """Build an event from untrusted input; a bad field is an :class:`InvalidEvent` naming it."""
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(f"{cls.type_name()} does not validate: {describe(exc)[0]}") from exc


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Metadata:
    """Who did it and why: on every event. ``actor`` is a user id, a token id or ``system:<part>``."""

    actor: str
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    causation_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"actor": self.actor, "correlation_id": self.correlation_id}
        if self.causation_id is not None:
            body["causation_id"] = self.causation_id
        if self.extra:
            body["extra"] = self.extra
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Metadata:
        body = orjson.loads(raw)
        return cls(
            actor=body.get("actor", "unknown"),
            correlation_id=body.get("correlation_id", ""),
            causation_id=body.get("causation_id"),
            extra=body.get("extra") or {},
        )

    def caused_by(self, recorded: RecordedEvent, actor: str | None = None) -> Metadata:
        """Metadata for an event that a reactor appends in response to ``recorded``."""
        return Metadata(
            actor=actor or self.actor,
            correlation_id=recorded.metadata.correlation_id,
            causation_id=recorded.event_id,
        )


class RecordedEvent:
    """An event as read back from the log.

    A hand-written slotted class rather than a frozen dataclass: replay builds hundreds of
    thousands of these per second, and frozen dataclasses pay for ``object.__setattr__`` on every
    field. Metadata is parsed on first access, since most projections never look at it. Treat
    instances as immutable.
    """

    __slots__ = ("position", "stream_id", "version", "type", "event", "_metadata", "occurred_at")

    def __init__(
        self,
        position: int,
        stream_id: str,
        version: int,
        type: str,
        event: Event,
        metadata: Metadata | str | bytes,
        occurred_at: dt.datetime,
    ) -> None:
        self.position = position
        self.stream_id = stream_id
        self.version = version
        self.type = type
        self.event = event
        self._metadata = metadata
        self.occurred_at = occurred_at

    @property
    def metadata(self) -> Metadata:
        meta = self._metadata
        if not isinstance(meta, Metadata):
            meta = self._metadata = Metadata.from_json(meta)
        return meta

    @property
    def event_id(self) -> str:
        return f"{self.stream_id}@{self.version}"

    def _key(self) -> tuple:
        return (self.position, self.stream_id, self.version, self.type, self.event, self.metadata, self.occurred_at)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecordedEvent) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.stream_id, self.version))

    def __repr__(self) -> str:
        return f"RecordedEvent({self.position}, {self.stream_id}@{self.version}, {self.event!r})"


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A stored event without decoding: for audit/history views and unknown types."""

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: Any
    metadata: dict[str, Any]
    occurred_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "version": self.version,
            "type": self.type,
            "schema_version": self.schema_version,
            "data": self.data,
            "metadata": self.metadata,
            "occurred_at": self.occurred_at.isoformat(),
        }


def category_of(stream_id: str) -> str:
    """``table-42`` -> ``table``; ``run-daily-2026-11-29`` -> ``run``."""
    return stream_id.split("-", 1)[0]


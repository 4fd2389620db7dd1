"""The event log: event types, metadata and the PostgreSQL store."""

from maestro.events.model import (
    Event,
    Metadata,
    RawEvent,
    RecordedEvent,
    category_of,
    decode,
    registered_types,
    upcaster,
    validate_event,
)

__all__ = [
    "Event",
    "Metadata",
    "RawEvent",
    "RecordedEvent",
    "category_of",
    "decode",
    "registered_types",
    "upcaster",
    "validate_event",
]

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

# Importing the domain's event modules registers their types, so any reader can decode the log.
from maestro.events import auth as _auth  # noqa: E402,F401
from maestro.events import catalog as _catalog  # noqa: E402,F401
from maestro.events import config as _config  # noqa: E402,F401
from maestro.events import deliveries as _deliveries  # noqa: E402,F401
from maestro.events import exports as _exports  # noqa: E402,F401
from maestro.events import imports as _imports  # noqa: E402,F401
from maestro.events import login_links as _login_links  # noqa: E402,F401
from maestro.events import runs as _runs  # noqa: E402,F401
from maestro.events import digests as _digests  # noqa: E402,F401
from maestro.events import git as _git  # noqa: E402,F401
from maestro.events import users as _users  # noqa: E402,F401

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

"""Rows of the ``events`` table as our types: what an append recorded, and what a read returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson

from maestro.events.model import Event, Metadata, RawEvent, RecordedEvent, decode

NO_STREAM = -1
"""Expected version: the stream must not exist yet."""
ANY_VERSION = -2
"""Expected version: append whatever the stream's version."""


def recorded_rows(
    row: Any,
    stream_id: str,
    events: Sequence[Event],
    types: list[str],
    metas: list[Metadata],
    occurred_at: dt.datetime,
) -> tuple[RecordedEvent, ...]:
    first, last_version = row["first_position"], row["last_version"]
    first_version = last_version - len(events) + 1
    return tuple(
        RecordedEvent(
            position=first + i,
            stream_id=stream_id,
            version=first_version + i,
            type=types[i],
            event=events[i],
            metadata=metas[i],
            occurred_at=occurred_at,
        )
        for i in range(len(events))
    )


def expected_label(expected_version: int) -> int | str:
    if expected_version == NO_STREAM:
        return "no stream"
    if expected_version == ANY_VERSION:
        return "any"
    return expected_version


def decode_row(row: Any) -> RecordedEvent:
    position = row[0]
    return RecordedEvent(
        position, row[1], row[2], row[3], decode(row[3], row[4], row[5], position), row[6], row[7]
    )


def raw_row(row: Any) -> RawEvent:
    return RawEvent(
        position=row[0],
        stream_id=row[1],
        version=row[2],
        type=row[3],
        schema_version=row[4],
        data=orjson.loads(row[5]),
        metadata=orjson.loads(row[6]),
        occurred_at=row[7],
    )

"""Cost digests: what a group was billed over a day or a week, compiled once per period.

Stream ``digest-<group>-<period>-<first day>`` (:func:`digest_stream`): the stream id is derived
from what it describes, so two replicas (or a restart) that compile the same period collide on
the stream instead of sending two digests. The event carries the figures as compiled, so the
message said about it is the same whenever it is (re)built.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict

from maestro.events.model import Event

DigestPeriod = Literal["daily", "weekly"]


class DigestTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    table_id: str
    name: str | None = None  # dataset.name when the table still exists
    bytes_billed: int
    jobs: int


class CostDigestCompiled(Event):
    group_id: str
    group_name: str | None = None
    period: DigestPeriod
    start: dt.date  # first UTC day of the period
    end: dt.date  # last UTC day (inclusive)
    bytes_billed: int
    jobs: int
    previous_bytes_billed: int  # the period before, for the change
    price_per_tib: float
    top: list[DigestTable] = []


def digest_stream(group_id: str, period: str, start: dt.date) -> str:
    return f"digest-{group_id}-{period}-{start.isoformat()}"

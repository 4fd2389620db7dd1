"""Event types used only by tests (a toy bank account domain)."""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events import Event, RecordedEvent, upcaster
from maestro.events.store import Connection
from maestro.projections import Projection


class AccountOpened(Event):
    owner: str


class Deposited(Event):
    amount: int


class Withdrawn(Event):
    amount: int
    reason: str = ""


class Poisoned(Event):
    """An event whose inline projection fails: used to make appends roll back."""

    note: str = ""


class LimitSet(Event):
    """Version 2 renamed ``max`` to ``limit`` and added ``currency``."""

    schema_version = 2
    limit: int
    currency: str


@upcaster("LimitSet", from_version=1)
def _limit_v1_to_v2(data: dict) -> dict:
    return {"limit": data["max"], "currency": "USD"}


class BalancesProjection(Projection):
    """Per-event SQL on purpose (order-sensitive), unlike the batched streams projection."""

    name = "test_balances"
    mode = "async"
    event_types = frozenset({"AccountOpened", "Deposited", "Withdrawn"})
    tables = ("test_balances",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e = r.event
            if isinstance(e, AccountOpened):
                await conn.execute(
                    "INSERT INTO test_balances (account, owner, balance, lowest, events) "
                    "VALUES ($1, $2, 0, 0, 1) ON CONFLICT (account) DO UPDATE SET owner = $2, events = test_balances.events + 1",
                    r.stream_id,
                    e.owner,
                )
            else:
                delta = e.amount if isinstance(e, Deposited) else -e.amount
                await conn.execute(
                    "INSERT INTO test_balances (account, owner, balance, lowest, events) "
                    "VALUES ($1, '', $2::bigint, least($2::bigint, 0), 1) ON CONFLICT (account) DO UPDATE SET "
                    "balance = test_balances.balance + $2, "
                    "lowest = least(test_balances.lowest, test_balances.balance + $2), "
                    "events = test_balances.events + 1",
                    r.stream_id,
                    delta,
                )


BALANCES_DDL = """
CREATE TABLE IF NOT EXISTS test_balances (
    account text PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL,
    lowest bigint NOT NULL, events integer NOT NULL
)
"""


class PoisonInline(Projection):
    """An inline projection that fails on Poisoned events (so the append rolls back) and can
    hold the transaction open for a while (so commits finish out of position order)."""

    name = "test_poison"
    mode = "inline"
    event_types = frozenset({"Poisoned", "Deposited"})

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        import asyncio
        import random

        if self.hold:
            await asyncio.sleep(random.random() * self.hold)
        if any(isinstance(r.event, Poisoned) for r in events):
            raise RuntimeError("poisoned: roll this append back")

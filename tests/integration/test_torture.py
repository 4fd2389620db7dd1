"""The no-skip guarantee under fire.

Eight writers append to overlapping streams for several seconds; a fraction of their
transactions roll back after taking positions, and inline work holds transactions open for a
random while so commits finish out of position order. A subscriber tails the log throughout.
At the end it must have seen every committed event exactly once, in position order, and nothing
else.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from sample_events import Deposited, PoisonInline, Poisoned

from maestro.errors import ConcurrencyConflict
from maestro.events import Metadata
from maestro.events.store import ANY_VERSION, EventStore

WRITERS = 8
DURATION_S = 6.0
STREAMS = [f"account-{i}" for i in range(12)]
ROLLBACK_RATE = 0.15

pytestmark = pytest.mark.slow


async def test_subscriber_sees_every_committed_event_once_in_order(store: EventStore) -> None:
    store.add_inline_projection(PoisonInline(hold=0.01))
    committed: list[int] = []
    commit_order: list[int] = []  # first positions in the order appends returned
    stats = {"rolled_back": 0, "conflicts": 0}
    seen: list[int] = []
    stop = asyncio.Event()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        meta = Metadata(actor=f"writer:{seed}")
        while not stop.is_set():
            stream = rng.choice(STREAMS)
            n = rng.randint(1, 4)
            events: list = [Deposited(amount=rng.randint(1, 100)) for _ in range(n)]
            if rng.random() < ROLLBACK_RATE:
                events[rng.randrange(n)] = Poisoned(note="roll back")
            expected = ANY_VERSION
            if rng.random() < 0.5:
                expected = await store.stream_version(stream) or 0
            try:
                result = await store.append(stream, expected, events, meta)
            except RuntimeError:
                stats["rolled_back"] += 1
                continue
            except ConcurrencyConflict:
                stats["conflicts"] += 1
                continue
            committed.extend(e.position for e in result.events)
            commit_order.append(result.first_position)

    async def subscriber() -> None:
        async for event in store.subscribe(0, batch_size=50):
            seen.append(event.position)

    tail = asyncio.create_task(subscriber())
    writers = [asyncio.create_task(writer(i)) for i in range(WRITERS)]
    await asyncio.sleep(DURATION_S)
    stop.set()
    await asyncio.gather(*writers)

    deadline = time.monotonic() + 30
    while len(seen) < len(committed) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything extra would show up now
    tail.cancel()
    with pytest.raises(asyncio.CancelledError):
        await tail

    assert stats["rolled_back"] > 10, stats
    assert stats["conflicts"] > 0, stats
    # The scenario really did commit positions out of order (otherwise it proves nothing).
    inversions = sum(1 for a, b in zip(commit_order, commit_order[1:]) if b < a)
    assert inversions > 10, inversions
    # Rolled-back transactions left holes in the positions.
    assert max(committed) - min(committed) + 1 > len(committed)

    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert seen == sorted(seen), "events were delivered out of position order"
    assert seen == sorted(committed), (
        f"missing {sorted(set(committed) - set(seen))[:10]}, extra {sorted(set(seen) - set(committed))[:10]}"
    )
    # And the log itself agrees: every committed event is there, nothing else.
    logged = [e.position for e in await store.read_all(0, limit=1_000_000)]
    assert logged == seen

"""The reactor host (maestro.handlers.notify.reactor) on a real PostgreSQL: own checkpoints,
resumption, exactly once per event through deterministic streams, give-up recorded, outages."""

from __future__ import annotations

import asyncio

from maestro.errors import ConcurrencyConflict, DatabaseUnavailable
from maestro.events.model import Event, Metadata, RecordedEvent
from maestro.events.store import ANY_VERSION, NO_STREAM
from maestro.handlers.notify.reactor import Reactor, ReactorHost
from maestro.health import Health

ME = Metadata(actor="system:tests")


class ToyHappened(Event):
    n: int


class ToyReacted(Event):
    n: int


class ToyGaveUp(Event):
    n: int
    why: str


class Toy(Reactor):
    """Reacts to each ToyHappened by appending ToyReacted on a stream derived from the event."""

    name = "toy"
    event_types = ("ToyHappened",)
    start_at = "beginning"
    attempts = 3

    def __init__(self, store, *, fail: set[int] = frozenset(), outage_once: set[int] = frozenset()) -> None:
        self.store, self.fail, self.outage_once = store, set(fail), set(outage_once)
        self.calls: list[int] = []
        self.resumed = 0

    async def resume(self) -> None:
        self.resumed += 1

    async def handle(self, event: RecordedEvent) -> None:
        n = event.event.n
        self.calls.append(n)
        if n in self.outage_once:
            self.outage_once.discard(n)
            raise DatabaseUnavailable("PostgreSQL unavailable: test")
        if n in self.fail:
            raise ValueError(f"cannot handle {n}")
        try:
            await self.store.append(f"toy-reaction-{event.event_id}", NO_STREAM, [ToyReacted(n=n)], ME)
        except ConcurrencyConflict:
            pass  # handled before: the side effect is not repeated

    async def give_up(self, event: RecordedEvent, error: BaseException) -> None:
        await self.store.append(f"toy-reaction-{event.event_id}", NO_STREAM,
                                [ToyGaveUp(n=event.event.n, why=str(error))], ME)


async def _append(store, *ns: int) -> None:
    for n in ns:
        await store.append("toy-source", ANY_VERSION, [ToyHappened(n=n)], ME)


async def _reactions(store) -> list[tuple[str, int]]:
    rows = await store.read_all(0, 1000, ["ToyReacted", "ToyGaveUp"])
    return sorted((r.type, r.event.n) for r in rows)


async def _until(predicate, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def _checkpoint(store, name: str = "toy") -> int:
    return await store.pool.fetchval("SELECT position FROM reactor_checkpoints WHERE name = $1", name)


async def test_each_reactor_follows_from_its_own_checkpoint_and_resumes(store) -> None:
    await _append(store, 1, 2, 3)
    health = Health()
    toy = Toy(store)
    host = ReactorHost(store, health, [toy], retry_delay=0.05)
    host.start()
    await _until(lambda: _has(store, 3))
    last = (await store.read_all(0, 100, ["ToyHappened"]))[-1].position
    await _until(lambda: _at(store, last))
    assert health.snapshot()["reactor:toy"].state == "ok"
    await host.stop()
    assert "reactor:toy" not in health.snapshot()

    await _append(store, 4, 5)
    again = Toy(store)
    host = ReactorHost(store, health, [again], retry_delay=0.05)
    host.start()
    await _until(lambda: _has(store, 5))
    await host.stop()
    assert again.calls == [4, 5], "a restarted reactor handled events before its checkpoint again"
    assert again.resumed == 1
    assert await _reactions(store) == [("ToyReacted", n) for n in (1, 2, 3, 4, 5)]


async def test_a_repeat_after_a_lost_checkpoint_has_no_second_effect(store) -> None:
    await _append(store, 1, 2)
    host = ReactorHost(store, Health(), [Toy(store)], retry_delay=0.05)
    host.start()
    await _until(lambda: _has(store, 2))
    await host.stop()
    # As after kill -9 between the work and the checkpoint: the checkpoint is behind the work.
    await store.pool.execute("UPDATE reactor_checkpoints SET position = 0 WHERE name = 'toy'")
    repeat = Toy(store)
    host = ReactorHost(store, Health(), [repeat], retry_delay=0.05)
    host.start()
    last = (await store.read_all(0, 100, ["ToyHappened"]))[-1].position
    await _until(lambda: _at(store, last))
    await host.stop()
    assert repeat.calls == [1, 2]  # handled again...
    assert await _reactions(store) == [("ToyReacted", 1), ("ToyReacted", 2)]  # ...with one effect each


async def test_a_new_reactor_starts_at_the_head_unless_it_asks_for_the_beginning(store) -> None:
    class Late(Toy):
        name = "late"
        start_at = "head"

    await _append(store, 1)
    late = Late(store)
    host = ReactorHost(store, Health(), [late], retry_delay=0.05)
    host.start()
    await _until(lambda: _exists(store, "late"))
    await _append(store, 2)
    await _until(lambda: _has(store, 1))  # only event 2 reacted
    await host.stop()
    assert late.calls == [2]


async def test_an_event_that_keeps_failing_is_given_up_as_an_event_and_the_reactor_goes_on(store) -> None:
    await _append(store, 1, 2, 3)
    toy = Toy(store, fail={2})
    host = ReactorHost(store, Health(), [toy], retry_delay=0.01)
    host.start()
    await _until(lambda: _has(store, 3))
    await host.stop()
    assert toy.calls == [1, 2, 2, 2, 3]
    assert await _reactions(store) == [("ToyGaveUp", 2), ("ToyReacted", 1), ("ToyReacted", 3)]


async def test_an_outage_marks_the_reactor_down_and_it_resubscribes_from_its_checkpoint(store) -> None:
    await _append(store, 1, 2)
    health = Health()
    toy = Toy(store, outage_once={2})
    seen: list[str] = []
    original = health.down

    def down(component, error) -> None:
        seen.append(component)
        original(component, error)

    health.down = down  # type: ignore[method-assign]
    host = ReactorHost(store, health, [toy], retry_delay=0.05)
    host.start()
    await _until(lambda: _has(store, 2))
    await host.stop()
    assert seen == ["reactor:toy"]
    assert toy.resumed == 2  # resumed again after the outage, from the checkpoint
    assert toy.calls == [1, 2, 1, 2] or toy.calls == [1, 2, 2]  # 1 again only if its batch was not saved
    assert await _reactions(store) == [("ToyReacted", 1), ("ToyReacted", 2)]


async def _has(store, count: int) -> bool:
    return len(await _reactions(store)) >= count


async def _at(store, position: int) -> bool:
    return (await _checkpoint(store) or 0) >= position


async def _exists(store, name: str) -> bool:
    return await _checkpoint(store, name) is not None

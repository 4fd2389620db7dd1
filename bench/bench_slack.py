"""Slack messages: how soon a message leaves after the event that causes it (healthy Slack).

The chain measured is the production one: an event is appended → the ``slack`` reactor (following
the log) reads its context and plans the delivery → the ``deliveries`` dispatcher (following the
log) hands it to the Slack sender, which checks its channel's lane and pace and calls
``chat.postMessage`` through slack-sdk → the local Slack fake (tests/slack_fake.py, in this
process) notes the arrival. The figure is *arrival − the moment before the append*:

- ``--n`` ``LoginDenied`` events one after another to the default channel, 1.1 s apart (within
  Slack's one message per second per channel: the receiver is healthy, nothing is throttled);
- ``--burst`` cost digests at once, each to its group's own channel (lanes do not wait on each other).

Baselines in the same run: a bare ``chat.postMessage`` through the same slack-sdk client (the
transport's floor) and an append followed by a subscriber's wake-up (the log's floor).

    .venv/bin/python -m bench.bench_slack [--n 30] [--burst 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_database, percentile
from maestro.adapters.slack import BotPoster
from maestro.events import Metadata
from maestro.events.auth import LoginDenied
from maestro.events.digests import CostDigestCompiled
from maestro.events.runs import JobStatistics, JobSucceeded
from maestro.events.store import ANY_VERSION, NO_STREAM
from maestro.handlers.notify.wiring import build_notify
from maestro.runtime import open_runtime
from maestro.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from slack_fake import SlackFake  # noqa: E402  (the local Slack the tests use)

ME = Metadata(actor="user:bench")


async def _arrival(slack: SlackFake, needle: str, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m, at in zip(slack.messages, slack.received, strict=False):
            if needle in m.text:
                return at
        await asyncio.sleep(0.002)
    raise TimeoutError(needle)


async def main(n: int, burst: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    async with SlackFake() as slack:
        for k in range(burst):
            slack.channels[f"bench-{k}"] = f"C0BENCH{k:04d}"
        with tempfile.TemporaryDirectory(prefix="maestro-bench-slack-") as tmp:
            async with bench_database() as dsn:
                settings = Settings(database_url=dsn, data_dir=Path(tmp) / "data", poll_interval=1.0)
                runtime = await open_runtime(settings)
                notify = build_notify(runtime.store, runtime.health, runtime.config_service.box, settings,
                                      storage=lambda: (None, None), schema=lambda t: asyncio.sleep(0, []),
                                      config=runtime.config)
                try:
                    await runtime.config_service.set_section("slack", {
                        "bot_token": slack.token, "channel": "#alerts", "api_base_url": slack.api_url,
                        "group_channels": {f"g{k}": f"#bench-{k}" for k in range(burst)}}, ME, partial=False)
                    await _measure(runtime, notify, slack, n, burst)
                finally:
                    await notify.close()
                    await runtime.close()


async def _measure(runtime, notify, slack: SlackFake, n: int, burst: int) -> None:
    store = runtime.store
    notify.start()
    await asyncio.sleep(0.5)  # the reactors have their checkpoints

    async def login(i: int) -> float:
        t0 = time.monotonic()
        await store.append(f"audit-bench-{i}", NO_STREAM, [LoginDenied(reason=f"bench-{i}-refused")], ME)
        return await _arrival(slack, f"bench-{i}-refused") - t0

    for i in range(3):  # warm-up: connections, first plans
        await login(i)
        await asyncio.sleep(1.1)
    sequential = []
    for i in range(3, 3 + n):
        sequential.append(await login(i))
        await asyncio.sleep(1.1)

    day = dt.date(2026, 3, 10)

    async def digest(k: int) -> float:
        t0 = time.monotonic()
        await store.append(f"digest-g{k}-daily-bench", NO_STREAM, [CostDigestCompiled(
            group_id=f"g{k}", group_name=f"bench group {k}", period="daily", start=day, end=day,
            bytes_billed=2**40, jobs=1, previous_bytes_billed=0, price_per_tib=6.25)], ME)
        return t0

    starts = await asyncio.gather(*(digest(k) for k in range(burst)))
    arrivals = await asyncio.gather(*(_arrival(slack, f"costs of bench group {k}:") for k in range(burst)))
    bursty = [a - s for a, s in zip(arrivals, starts, strict=True)]

    bot = BotPoster(slack.token, base_url=slack.api_url)
    bare = []
    for i in range(n):
        t0 = time.monotonic()
        await bot.post("#general", f"bare {i}", [])
        bare.append(slack.received[-1] - t0)
        await asyncio.sleep(1.0)
    log_floor = []
    for _ in range(n):
        head = await store.head_position()
        t0 = time.monotonic()
        await store.append("bench-wake", ANY_VERSION, [JobSucceeded(job_id="x", run_id=None, table_id="x",
                                                                   statistics=JobStatistics())], ME)
        async for _ in store.subscribe(head, types=["JobSucceeded"]):
            log_floor.append(time.monotonic() - t0)
            break
    throttled = sum(1 for c in slack.calls if c[1] == 429)

    def row(label: str, value: str, extra: str = "") -> None:
        print(f"  {label:<52} {value:>18} {extra}")

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000

    print(f"\nSlack messages, {n} one after another and {burst} channels at once "
          f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)")
    row("event -> chat.postMessage received, p50 (ms)", f"{ms(sequential, 50):.1f}")
    row("event -> chat.postMessage received, p99 (ms)", f"{ms(sequential, 99):.1f}", "target <= 1000")
    row(f"{burst} channels at once: p50 / p99 (ms)", f"{ms(bursty, 50):.1f} / {ms(bursty, 99):.1f}", "target <= 1000")
    row("baseline: bare chat.postMessage p50 / p99 (ms)", f"{ms(bare, 50):.2f} / {ms(bare, 99):.2f}")
    row("baseline: append -> subscriber p50 / p99 (ms)", f"{ms(log_floor, 50):.2f} / {ms(log_floor, 99):.2f}")
    row("p99 ratio to bare post + two log hops", f"{ms(sequential, 99) / (ms(bare, 99) + 2 * ms(log_floor, 99)):.1f}x")
    row("429 answers from the fake", str(throttled))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.burst))

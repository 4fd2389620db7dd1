"""Scheduler tick cost: ``due_slots`` for 1,000 frequencies, one tick per 10 s over a simulated day.

The frequencies mix periods from 60 s to one day (some odd, some with offsets) with 10% cron
expressions in several time zones. Each tick asks every frequency what is due and feeds the
answer back as ``last_decided``, as the scheduler does. The figure is CPU time per tick, and that
as a share of one core at the real 10 s tick (target: under 5%).

    .venv/bin/python -m bench.bench_scheduler [--frequencies 1000] [--hours 24]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime, timedelta, timezone

from bench.common import percentile, row
from maestro.scheduling import Schedule, due_slots

TICK = 10  # seconds, as the original's runTicker
PERIODS = [60, 300, 600, 900, 1800, 3600, 7200, 4 * 3600, 6 * 3600, 12 * 3600, 86400, 97, 7000, 5400]
CRONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "0 4 * * 1-5", "15 */3 * * *", "0 9-17 * * 1-5", "@daily"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]


def frequencies(count: int, seed: int = 7) -> list[Schedule]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i % 10 == 0:
            out.append(Schedule(cron=rng.choice(CRONS), timezone=rng.choice(ZONES)))
        else:
            period = rng.choice(PERIODS)
            out.append(Schedule(period=period, offset=rng.randrange(-period + 1, period) if rng.random() < 0.5 else 0))
    return out


def simulate(schedules: list[Schedule], start: datetime, hours: float) -> tuple[list[float], int]:
    last: list[datetime | None] = [None] * len(schedules)
    ticks: list[float] = []
    started = 0
    now, end = start, start + timedelta(hours=hours)
    while now < end:
        t0 = time.process_time()
        for i, schedule in enumerate(schedules):
            for slot in due_slots(schedule, last[i], now, "latest"):
                last[i] = slot
                started += 1
        ticks.append(time.process_time() - t0)
        now += timedelta(seconds=TICK)
    return ticks, started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frequencies", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0, help="simulated time")
    args = parser.parse_args()
    print(f"scheduler benchmark ({args.frequencies:,} frequencies, 10% cron, one tick per {TICK} s "
          f"over {args.hours:g} simulated hours)")
    schedules = frequencies(args.frequencies)
    # 31 March 2024: the spring-forward day in Europe, so the cron zones cross a DST change.
    ticks, started = simulate(schedules, datetime(2024, 3, 30, 22, 0, 3, tzinfo=timezone.utc), args.hours)
    mean = sum(ticks) / len(ticks)
    row(f"CPU per tick, mean ({len(ticks):,} ticks)", mean * 1e6, "µs", f"{mean / TICK * 100:.3f}% of one core")
    row("CPU per tick, p99", percentile(ticks, 99) * 1e6, "µs", f"{percentile(ticks, 99) / TICK * 100:.3f}% of one core")
    row("CPU of the first tick (cron windows not yet known)", ticks[0] * 1e6, "µs")
    row("CPU per tick, max", max(ticks) * 1e6, "µs", f"{max(ticks) / TICK * 100:.3f}% of one core")
    row("due_slots calls per CPU second", len(ticks) * len(schedules) / sum(ticks), "calls/s")
    row("runs started", started, "runs", f"{started / len(schedules):.1f} per frequency")
    verdict = "OK" if mean / TICK < 0.05 else "OVER TARGET"
    print(f"  target < 5% of one core at a {TICK} s tick: {verdict}")


if __name__ == "__main__":
    main()

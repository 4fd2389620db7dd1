"""When the next attempt of a delivery is due: exponential backoff with jitter, ``Retry-After``
honoured, never past the schedule's deadline. Pure functions; the chosen time is recorded in the
attempt's event, so a restart resumes the schedule instead of drawing it again.

>>> import datetime as dt, random
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> s = RetrySchedule(initial=10, max_delay=60, deadline=t0 + dt.timedelta(hours=1), timeout=10)
>>> [delay_bounds(s, n) for n in (1, 2, 3, 4)]
[(5.0, 10.0), (10.0, 20.0), (20.0, 40.0), (30.0, 60.0)]
>>> next_attempt_at(s, 1, t0, retry_after=600, rng=random.Random(1)) == t0 + dt.timedelta(seconds=600)
True
>>> next_attempt_at(s, 1, t0 + dt.timedelta(minutes=59, seconds=58), rng=random.Random(1)) is None
True
>>> next_attempt_at(s, 1, t0, retry_after=999999999999.0, rng=random.Random(1)) is None
True
"""

from __future__ import annotations

import datetime as dt
import random

from maestro.events.deliveries import RetrySchedule

__all__ = ["RetrySchedule", "delay_bounds", "new_schedule", "next_attempt_at"]


def new_schedule(now: dt.datetime, *, initial: float, max_delay: float, window: float, timeout: float) -> RetrySchedule:
    return RetrySchedule(initial=initial, max_delay=max_delay, deadline=now + dt.timedelta(seconds=window), timeout=timeout)


def delay_bounds(schedule: RetrySchedule, attempt: int) -> tuple[float, float]:
    """The range the delay after failed attempt ``attempt`` (from 1) is drawn from: "equal
    jitter", half fixed and half random, so retries of many deliveries that failed together
    spread out yet none comes back at once."""
    full = min(schedule.max_delay, schedule.initial * 2 ** min(attempt - 1, 60))
    return full / 2, full


def next_attempt_at(
    schedule: RetrySchedule, attempt: int, now: dt.datetime, *, retry_after: float | None = None,
    rng: random.Random | None = None,
) -> dt.datetime | None:
    """When to try again after failed attempt ``attempt``; None when that would pass the deadline.
    A ``Retry-After`` longer than the backoff wins (the receiver knows when it can take more)."""
    low, high = delay_bounds(schedule, attempt)
    delay = (rng or random).uniform(low, high)
    if retry_after is not None:
        delay = max(delay, retry_after)
    # Compared in seconds before a timedelta is built: a receiver's Retry-After may be any number
    # (999999999999 overflows a datetime), and anything past the deadline ends the schedule anyway.
    if not delay <= (schedule.deadline - now).total_seconds():
        return None
    return now + dt.timedelta(seconds=delay)

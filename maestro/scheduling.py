"""When frequencies fire, which slots a tick must start, and whether a table's conditions hold.

Pure functions on aware datetimes: no I/O, no clock. The scheduler passes ``now`` in.

**Period slots** keep the original's arithmetic (``now.Truncate(period) + offset`` in Go): a
frequency fires at every instant ``t`` with ``(t - EPOCH - offset) % period == 0``, where EPOCH is
Go's zero time, 0001-01-01T00:00:00Z. Counting from there rather than from 1970 is what users of
the original rely on:

- a daily period aligns to UTC midnight (offset 14400 → 04:00 UTC every day);
- a 7-day period aligns to **Monday** 00:00 UTC (0001-01-01 was a Monday);
- a period that does not divide a day (e.g. 7000 s) aligns to instants that look arbitrary.

Period slots are always UTC-aligned; a local-time schedule is a cron schedule.

**Cron slots** are the instants of a 5-field cron expression in an IANA time zone, evaluated by
``cronsim`` (which follows Debian's cron). Across daylight-saving changes, a job at a fixed minute
and hour runs **once** a day:

- spring forward (Europe/Paris, last Sunday of March, 02:00 → 03:00): a 02:30 job runs at 03:00
  local time, as soon as the skipped hour is over;
- fall back (last Sunday of October, 03:00 → 02:00): a 02:30 job runs at the first 02:30 (CEST,
  00:30 UTC), not again an hour later.

A job with ``*`` in its minute or hour field (``*/15 * * * *``, ``0 * * * *``) follows elapsed
time instead: it runs in both copies of the repeated hour and not in the hour that does not exist.
"""

from __future__ import annotations

import dataclasses
import functools
import zoneinfo
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Literal, Protocol

from cronsim import CronSim, CronSimError

from maestro.errors import ValidationFailed

UTC = timezone.utc
EPOCH = datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time: the origin of period slots
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)

Policy = Literal["latest", "skip"]
# How late a tick may be and still start a slot under "skip" (and on a brand-new frequency). The
# scheduler ticks every 10 s; 60 s tolerates a slow tick or a short pause without reaching back
# to slots that were really missed.
SKIP_GRACE = timedelta(seconds=60)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """When a frequency fires: every ``period`` seconds shifted by ``offset``, or a cron expression.

    >>> Schedule(period=86400, offset=14400)
    Schedule(period=86400, offset=14400, cron=None, timezone='UTC')
    >>> Schedule(cron="0 4 * * 1-5", timezone="Europe/Paris").cron
    '0 4 * * 1-5'
    """

    period: int | None = None  # seconds
    offset: int = 0  # seconds; may be negative; taken modulo the period
    cron: str | None = None
    timezone: str = "UTC"  # IANA name; cron schedules only

    def __post_init__(self) -> None:
        if self.cron is None:
            if type(self.period) is not int or self.period <= 0:
                raise ValidationFailed("a schedule needs a period of at least one second, or a cron expression",
                                       field="period", value=self.period)
            if type(self.offset) is not int:
                raise ValidationFailed("the offset is a whole number of seconds", field="offset", value=self.offset)
            if self.timezone != "UTC":
                raise ValidationFailed("a period schedule is aligned to UTC; use a cron expression for a schedule "
                                       "in a local time zone", field="timezone", value=self.timezone)
        else:
            if self.period is not None or self.offset:
                raise ValidationFailed("a schedule has either a cron expression or a period and offset, not both",
                                       field="cron", value=self.cron)
            _cron_plan(self.cron, self.timezone)  # validates; cached for the slot functions

    @classmethod
    def from_spec(cls, spec: Any, *, cron: str | None = None, timezone: str | None = None) -> Schedule:
        """The schedule of a ``FrequencySpec`` (or anything with ``period`` and ``offset``).

        ``cron``/``timezone`` default to the spec's own fields of those names, if it has them.
        """
        cron = cron if cron is not None else getattr(spec, "cron", None)
        timezone = timezone or getattr(spec, "timezone", None) or "UTC"
        if cron is not None:
            return cls(cron=cron, timezone=timezone)
        return cls(period=spec.period, offset=spec.offset, timezone=timezone)


def slot_at_or_before(freq: Schedule | Any, instant: datetime) -> datetime:
    """The latest slot at or before ``instant`` (aware; the result is UTC).

    >>> daily_4am = Schedule(period=86400, offset=14400)
    >>> slot_at_or_before(daily_4am, datetime(2024, 5, 1, 3, 59, tzinfo=UTC)).isoformat()
    '2024-04-30T04:00:00+00:00'
    >>> slot_at_or_before(daily_4am, datetime(2024, 5, 1, 4, 0, tzinfo=UTC)).isoformat()
    '2024-05-01T04:00:00+00:00'
    """
    schedule = _schedule(freq)
    if schedule.cron is not None:
        return _cron_window(schedule, instant)[0]
    return _from_micros(_period_floor(schedule, instant))


def next_slot_after(freq: Schedule | Any, instant: datetime) -> datetime:
    """The first slot strictly after ``instant`` (aware; the result is UTC).

    >>> weekly = Schedule(period=7 * 86400)
    >>> next_slot_after(weekly, datetime(2024, 5, 1, tzinfo=UTC)).strftime("%A %Y-%m-%d %H:%M")
    'Monday 2024-05-06 00:00'
    """
    schedule = _schedule(freq)
    if schedule.cron is not None:
        return _cron_window(schedule, instant)[1]
    return _from_micros(_period_floor(schedule, instant) + schedule.period * 1_000_000)  # type: ignore[operator]


def due_slots(
    schedule: Schedule | Any,
    last_decided: datetime | None,
    now: datetime,
    policy: Policy = "latest",
    *,
    grace: timedelta = SKIP_GRACE,
) -> list[datetime]:
    """The slots to start at ``now``: at most one, and never one at or before ``last_decided``.

    ``last_decided`` is the latest slot already started. Slots in ``(last_decided, now]`` are
    owed; when the service was down several are, and
    - ``latest`` starts only the most recent of them, once;
    - ``skip`` starts it only if it is at most ``grace`` old (a tick that is merely late).
    ``last_decided=None`` (a brand-new frequency) does not reach back into history: only a slot at
    most ``grace`` old is started. A caller that knows when the frequency was created or
    activated can pass that instant as ``last_decided`` instead: slots after it are then owed.

    >>> hourly = Schedule(period=3600)
    >>> at = lambda h, m=0: datetime(2024, 5, 1, h, m, tzinfo=UTC)
    >>> [s.hour for s in due_slots(hourly, at(1), at(5, 30), "latest")]
    [5]
    >>> due_slots(hourly, at(1), at(5, 30), "skip")
    []
    >>> due_slots(hourly, at(5), at(5, 30), "latest")
    []
    """
    if policy not in ("latest", "skip"):
        raise ValueError(f"unknown catch-up policy {policy!r}: 'latest' or 'skip'")
    try:
        slot = slot_at_or_before(schedule, now)
    except LookupError:  # a cron expression that last fired more than 50 years ago
        return []
    if last_decided is not None and slot <= last_decided:
        return []
    if (last_decided is None or policy == "skip") and now - slot > grace:
        return []
    return [slot]


def run_id_for(frequency_id: str, slot: datetime) -> str:
    """The deterministic id of a frequency's run for ``slot`` (its stream is ``run-<id>``).

    Two schedulers deciding the same slot produce the same id, so they collide on the stream
    instead of running the frequency twice.

    >>> run_id_for("daily", datetime(2024, 5, 1, 6, 0, tzinfo=timezone(timedelta(hours=2))))
    'daily-20240501T040000Z'
    """
    s = _utc(slot)
    if s.microsecond:
        raise ValueError(f"slots are whole seconds, got {slot.isoformat()}")
    return f"{frequency_id}-{s.year:04d}{s.month:02d}{s.day:02d}T{s.hour:02d}{s.minute:02d}{s.second:02d}Z"


class ConditionLike(Protocol):
    months: Collection[int]
    weekdays: Collection[int]  # 0 = Sunday
    days: Collection[int]
    hours: Collection[int]


def conditions_hold(conditions: Iterable[ConditionLike], instant: datetime, timezone: str | tzinfo = "UTC") -> bool:
    """Whether a table runs at ``instant``, its conditions read in the table's time zone.

    Fields AND within a condition (an empty field matches anything); conditions OR across the
    list; no conditions means always. Weekday 0 is Sunday. The original read the server's local
    zone, so a condition's meaning changed with the machine: here the zone is the table's.
    Pass the slot, not the wall clock, so a run started late still sees its own hour.

    >>> from types import SimpleNamespace as C
    >>> eleven_pm = C(months=[], weekdays=[], days=[], hours=[23])
    >>> at = datetime(2024, 5, 2, 3, 0, tzinfo=UTC)  # Wednesday 23:00 in New York
    >>> conditions_hold([eleven_pm], at, "America/New_York"), conditions_hold([eleven_pm], at, "UTC")
    (True, False)
    """
    local = _utc(instant).astimezone(_zone(timezone) if isinstance(timezone, str) else timezone)
    weekday = local.isoweekday() % 7  # Monday=1 … Sunday=7 → Sunday=0
    empty = True
    for c in conditions:
        empty = False
        if (
            (not c.months or local.month in c.months)
            and (not c.weekdays or weekday in c.weekdays)
            and (not c.days or local.day in c.days)
            and (not c.hours or local.hour in c.hours)
        ):
            return True
    return empty


# --- period arithmetic -------------------------------------------------------------------------
# Integer microseconds since EPOCH: exact for every datetime, so slots never drift the way float
# seconds would (a float loses microseconds past year ~2200 counted from year 1).


def _period_floor(schedule: Schedule, instant: datetime) -> int:
    micros = (_utc(instant) - EPOCH) // _MICROSECOND
    period, offset = schedule.period * 1_000_000, schedule.offset * 1_000_000  # type: ignore[operator]
    return micros - (micros - offset) % period  # Python's % is non-negative for period > 0


def _from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"scheduling needs aware datetimes, got naive {instant.isoformat()}")
    return instant.astimezone(UTC)


def _schedule(freq: Schedule | Any) -> Schedule:
    return freq if isinstance(freq, Schedule) else Schedule.from_spec(freq)


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC  # cronsim skips its DST handling for this exact object
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"unknown time zone {name!r}", field="timezone", value=name) from None


# --- cron --------------------------------------------------------------------------------------
# cronsim parses in its constructor and iterates from the datetime it is given, so "caching the
# parsed expression" means caching what we learnt from it: each (expression, zone) keeps the last
# window [previous slot, next slot). A scheduler asking about 1,000 frequencies every 10 s hits
# the window almost always and iterates cron only once per slot.


class _CronPlan:
    __slots__ = ("expr", "zone", "window")

    def __init__(self, expr: str, zone: tzinfo) -> None:
        self.expr, self.zone = expr, zone
        self.window: tuple[datetime, datetime] | None = None  # replaced whole: safe across threads


@functools.lru_cache(maxsize=4096)
def _cron_plan(cron: str, timezone: str) -> _CronPlan:
    expr = " ".join(cron.split())
    expr = _MACROS.get(expr.lower(), expr)
    problem = None
    if len(expr.split()) != 5:
        problem = "a cron expression has 5 fields: minute hour day-of-month month day-of-week"
    else:
        try:
            next(CronSim(expr, datetime(2000, 1, 1)))
        except CronSimError as exc:
            problem = f"{str(exc).lower()} field"
        except StopIteration:
            problem = "it never fires"
    if problem:
        raise ValidationFailed(f"invalid cron expression {cron!r}: {problem}", field="cron", value=cron)
    return _CronPlan(expr, _zone(timezone))


def _cron_window(schedule: Schedule, instant: datetime) -> tuple[datetime, datetime]:
    plan = _cron_plan(schedule.cron, schedule.timezone)  # type: ignore[arg-type]
    t = _utc(instant)
    window = plan.window
    if window is None or not window[0] <= t < window[1]:
        window = plan.window = _cron_bracket(plan, t)
    return window


def _cron_after(plan: _CronPlan, t: datetime) -> datetime:
    # The forward iteration defines the slots. It starts from local wall time, which forgets which
    # copy of a repeated hour ``t`` was in, so it can answer a slot before ``t``: step past it.
    it = CronSim(plan.expr, t.astimezone(plan.zone))
    try:
        while (slot := next(it).astimezone(UTC)) <= t:
            pass
    except StopIteration:
        raise LookupError(f"{plan.expr!r} has no slot in the 50 years after {t.isoformat()}") from None
    return slot


def _cron_bracket(plan: _CronPlan, t: datetime) -> tuple[datetime, datetime]:
    """The last slot at or before ``t`` and the first one after it."""
    # cronsim's reverse iteration can miss the slot just after a DST change (it steps back out of
    # the skipped hour, and reads a repeated hour's wall time as its first copy), so its answer
    # is only a starting point: walk forward along the real slots up to ``t``.
    probe = t.replace(microsecond=0) + _SECOND  # reverse yields slots strictly before its start
    backwards = CronSim(plan.expr, probe.astimezone(plan.zone), reverse=True)
    try:
        while (slot := _cron_after(plan, next(backwards).astimezone(UTC) - _SECOND)) > t:
            pass  # reverse and forward disagree on this candidate: take an earlier one
    except StopIteration:
        raise LookupError(f"{plan.expr!r} has no slot in the 50 years before {t.isoformat()}") from None
    while (following := _cron_after(plan, slot)) <= t:
        slot = following
    return slot, following

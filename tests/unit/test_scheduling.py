"""Unit tests of slots, due slots, run ids and conditions (maestro/scheduling.py): pure, no database."""

from __future__ import annotations

import doctest
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maestro import scheduling
from maestro.errors import ValidationFailed
from maestro.events.catalog import Condition, FrequencySpec
from maestro.scheduling import (
    EPOCH,
    SKIP_GRACE,
    Schedule,
    conditions_hold,
    due_slots,
    next_slot_after,
    run_id_for,
    slot_at_or_before,
)

UTC = timezone.utc
US = timedelta(microseconds=1)
DAY = 86400


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def go_seconds(t: datetime) -> int:
    """Whole seconds since Go's zero time, counted independently of the module (via ordinals)."""
    t = t.astimezone(UTC)
    return (date(t.year, t.month, t.day).toordinal() - 1) * DAY + t.hour * 3600 + t.minute * 60 + t.second


def test_doctests() -> None:
    assert doctest.testmod(scheduling).failed == 0


def test_epoch_is_a_monday_at_go_zero_time() -> None:
    assert EPOCH == datetime(1, 1, 1, tzinfo=UTC) and EPOCH.weekday() == 0


# --- period slots ------------------------------------------------------------------------------

PERIOD_CASES = [
    # (period, offset, instant, at_or_before, next_after)
    pytest.param(DAY, 14400, utc(2024, 5, 1, 12), utc(2024, 5, 1, 4), utc(2024, 5, 2, 4), id="daily-4am-doc-example"),
    pytest.param(DAY, 14400, utc(2024, 5, 1, 3, 59, 59), utc(2024, 4, 30, 4), utc(2024, 5, 1, 4), id="daily-4am-before"),
    pytest.param(DAY, 0, utc(2024, 2, 29, 23, 59), utc(2024, 2, 29), utc(2024, 3, 1), id="daily-midnight-leap-day"),
    pytest.param(7 * DAY, 0, utc(2024, 5, 1, 9), utc(2024, 4, 29), utc(2024, 5, 6), id="weekly-monday"),
    pytest.param(7 * DAY, 0, utc(2024, 5, 6), utc(2024, 5, 6), utc(2024, 5, 13), id="weekly-on-monday"),
    pytest.param(7 * DAY, 2 * DAY, utc(2024, 5, 1, 9), utc(2024, 5, 1), utc(2024, 5, 8), id="weekly-wednesday"),
    pytest.param(3600, -600, utc(2024, 5, 1, 10, 55), utc(2024, 5, 1, 10, 50), utc(2024, 5, 1, 11, 50), id="hourly-minus-10min"),
    pytest.param(3600, -600, utc(2024, 5, 1, 10, 45), utc(2024, 5, 1, 9, 50), utc(2024, 5, 1, 10, 50), id="hourly-minus-10min-b"),
    pytest.param(3600, -3599, utc(2024, 5, 1, 10, 0, 0), utc(2024, 5, 1, 9, 0, 1), utc(2024, 5, 1, 10, 0, 1), id="hourly-extreme-negative"),
    pytest.param(60, 0, utc(2024, 5, 1, 10, 0, 59, 999999), utc(2024, 5, 1, 10), utc(2024, 5, 1, 10, 1), id="minutely-last-microsecond"),
]


@pytest.mark.parametrize(("period", "offset", "instant", "before", "after"), PERIOD_CASES)
def test_period_slots(period: int, offset: int, instant: datetime, before: datetime, after: datetime) -> None:
    schedule = Schedule(period=period, offset=offset)
    assert slot_at_or_before(schedule, instant) == before
    assert next_slot_after(schedule, instant) == after


@pytest.mark.parametrize("period", [7, 7000, 86399, 90061, 10 * DAY + 1])
@pytest.mark.parametrize("offset", [0, 5, -3])
def test_odd_periods_align_to_go_zero_time(period: int, offset: int) -> None:
    schedule = Schedule(period=period, offset=offset)
    t = utc(2024, 5, 1, 13, 37, 11)
    expected = t - timedelta(seconds=(go_seconds(t) - offset) % period)
    assert slot_at_or_before(schedule, t) == expected
    assert next_slot_after(schedule, t) == expected + timedelta(seconds=period)


@pytest.mark.parametrize(("period", "offset"), [(DAY, 14400), (3600, -600), (7000, 13), (60, 0)])
def test_exactly_on_a_slot(period: int, offset: int) -> None:
    schedule = Schedule(period=period, offset=offset)
    slot = slot_at_or_before(schedule, utc(2024, 5, 1, 12))
    assert slot_at_or_before(schedule, slot) == slot
    assert next_slot_after(schedule, slot) == slot + timedelta(seconds=period)
    assert slot_at_or_before(schedule, slot - US) == slot - timedelta(seconds=period)
    assert next_slot_after(schedule, slot - US) == slot


def test_no_drift_far_from_the_epoch() -> None:
    schedule = Schedule(period=7, offset=3)
    t = utc(9000, 12, 31, 23, 59, 59, 999999)
    slot = slot_at_or_before(schedule, t)
    assert (go_seconds(slot) - 3) % 7 == 0 and slot.microsecond == 0 and t - slot < timedelta(seconds=7)


def test_results_are_utc_whatever_the_input_zone() -> None:
    schedule = Schedule(period=DAY, offset=14400)
    paris_noon = datetime(2024, 5, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    assert slot_at_or_before(schedule, paris_noon) == utc(2024, 5, 1, 4)
    assert slot_at_or_before(schedule, paris_noon).tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        slot_at_or_before(Schedule(period=60), datetime(2024, 5, 1))


def test_a_frequency_spec_is_accepted_directly() -> None:
    spec = FrequencySpec(name="daily 4am", period=DAY, offset=14400)
    assert Schedule.from_spec(spec) == Schedule(period=DAY, offset=14400)
    assert next_slot_after(spec, utc(2024, 5, 1, 5)) == utc(2024, 5, 2, 4)
    assert Schedule.from_spec(spec, cron="0 4 * * 1-5", timezone="Europe/Paris").cron == "0 4 * * 1-5"


periods = st.integers(1, 40 * DAY)
instants = st.datetimes(datetime(1900, 1, 1), datetime(9000, 1, 1), timezones=st.just(UTC))


@st.composite
def period_schedules(draw: st.DrawFn) -> Schedule:
    period = draw(periods)
    return Schedule(period=period, offset=draw(st.integers(-period + 1, period - 1)))


@settings(max_examples=300, deadline=None)
@given(period_schedules(), instants)
def test_period_properties(schedule: Schedule, t: datetime) -> None:
    period = timedelta(seconds=schedule.period)  # type: ignore[arg-type]
    before, after = slot_at_or_before(schedule, t), next_slot_after(schedule, t)
    assert before <= t < after
    assert after - before == period
    assert next_slot_after(schedule, before) - before == period  # consecutive slots
    assert (go_seconds(before) - schedule.offset) % schedule.period == 0  # type: ignore[operator]
    assert ((before - EPOCH) // US - schedule.offset * 10**6) % (schedule.period * 10**6) == 0  # type: ignore[operator]


# --- schedule validation -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"period": 0}, "period"),
        ({"period": -60}, "period"),
        ({}, "period"),
        ({"period": 60, "timezone": "Europe/Paris"}, "aligned to UTC"),
        ({"period": 60, "cron": "* * * * *"}, "not both"),
        ({"cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*': bad minute"),
        ({"cron": "0 25 * * *"}, "bad hour"),
        ({"cron": "0 4 * * 1-8"}, "bad day-of-week"),
        ({"cron": "0 0 31 2 *"}, "bad day-of-month"),
        ({"cron": "* * *"}, "5 fields"),
        ({"cron": "0 * * * * *"}, "5 fields"),
        ({"cron": "every day"}, "5 fields"),
        ({"cron": "@sometimes"}, "5 fields"),
        ({"cron": "0 4 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_invalid_schedules(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        Schedule(**kwargs)  # type: ignore[arg-type]


# --- due slots ---------------------------------------------------------------------------------

HOURLY = Schedule(period=3600)
DUE_CASES = [
    # (last_decided, now, latest, skip)
    pytest.param(None, utc(2024, 5, 1, 10, 30), [], [], id="fresh-mid-period-no-backfill"),
    pytest.param(None, utc(2024, 5, 1, 10, 0, 20), [utc(2024, 5, 1, 10)], [utc(2024, 5, 1, 10)], id="fresh-on-a-fresh-slot"),
    pytest.param(None, utc(2024, 5, 1, 10), [utc(2024, 5, 1, 10)], [utc(2024, 5, 1, 10)], id="fresh-exactly-on-slot"),
    pytest.param(utc(2024, 5, 1, 9), utc(2024, 5, 1, 10, 0, 5), [utc(2024, 5, 1, 10)], [utc(2024, 5, 1, 10)], id="normal-tick"),
    pytest.param(utc(2024, 5, 1, 10), utc(2024, 5, 1, 10, 0, 15), [], [], id="next-tick-already-started"),
    pytest.param(utc(2024, 5, 1, 9), utc(2024, 5, 1, 10), [utc(2024, 5, 1, 10)], [utc(2024, 5, 1, 10)], id="clock-exactly-on-slot"),
    pytest.param(utc(2024, 5, 1, 9), utc(2024, 5, 1, 10) - US, [], [], id="a-microsecond-early"),
    pytest.param(utc(2024, 5, 1, 5), utc(2024, 5, 1, 10, 30), [utc(2024, 5, 1, 10)], [], id="missed-several"),
    pytest.param(utc(2024, 5, 1, 5), utc(2024, 5, 1, 10, 0, 30), [utc(2024, 5, 1, 10)], [utc(2024, 5, 1, 10)], id="missed-several-slot-fresh"),
    pytest.param(utc(2024, 5, 1, 9), utc(2024, 5, 1, 10) + SKIP_GRACE, [utc(2024, 5, 1, 10)], [utc(2024, 5, 1, 10)], id="late-by-grace"),
    pytest.param(utc(2024, 5, 1, 9), utc(2024, 5, 1, 10) + SKIP_GRACE + US, [utc(2024, 5, 1, 10)], [], id="late-past-grace"),
    pytest.param(utc(2000, 1, 1), utc(2024, 5, 1, 10, 30), [utc(2024, 5, 1, 10)], [], id="down-for-24-years"),
    pytest.param(utc(2024, 5, 1, 12), utc(2024, 5, 1, 10, 30), [], [], id="clock-went-back"),
    pytest.param(utc(2024, 5, 1, 9, 17), utc(2024, 5, 1, 10, 0, 2), [utc(2024, 5, 1, 10)], [utc(2024, 5, 1, 10)], id="last-decided-not-a-slot"),
]


@pytest.mark.parametrize(("last", "now", "latest", "skip"), DUE_CASES)
def test_due_slots(last: datetime | None, now: datetime, latest: list[datetime], skip: list[datetime]) -> None:
    assert due_slots(HOURLY, last, now, "latest") == latest
    assert due_slots(HOURLY, last, now, "skip") == skip


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):
        due_slots(HOURLY, None, utc(2024, 5, 1), "all")  # type: ignore[arg-type]


def simulate(schedule: Schedule, policy: str, start: datetime, end: datetime,
             down: tuple[datetime, datetime] | None = None, tick: int = 10) -> list[datetime]:
    """What a 10 s ticker started (feeding back last_decided), optionally down for a while."""
    started: list[datetime] = []
    last = None
    now = start
    while now < end:
        if down is None or not down[0] <= now < down[1]:
            for slot in due_slots(schedule, last, now, policy):  # type: ignore[arg-type]
                started.append(slot)
                last = slot
        now += timedelta(seconds=tick)
    return started


@pytest.mark.parametrize("policy", ["latest", "skip"])
@pytest.mark.parametrize(("period", "offset"), [(3600, 0), (900, -300), (7000, 11), (DAY, 14400)])
def test_a_ticker_starts_every_slot_exactly_once(policy: str, period: int, offset: int) -> None:
    schedule = Schedule(period=period, offset=offset)
    start, end = utc(2024, 5, 1, 0, 0, 3), utc(2024, 5, 3)
    started = simulate(schedule, policy, start, end)
    expected, slot = [], next_slot_after(schedule, start - SKIP_GRACE)
    while slot < end:
        expected.append(slot)
        slot += timedelta(seconds=period)
    assert started == expected


@pytest.mark.parametrize(("policy", "expected_hours"), [("latest", [0, 1, 2, 3, 7, 8, 9]), ("skip", [0, 1, 2, 3, 8, 9])])
def test_an_outage_catches_up_by_policy(policy: str, expected_hours: list[int]) -> None:
    down = (utc(2024, 5, 1, 3, 10), utc(2024, 5, 1, 7, 40))
    started = simulate(HOURLY, policy, utc(2024, 5, 1, 0, 0, 5), utc(2024, 5, 1, 9, 30), down)
    assert [s.hour for s in started] == expected_hours


# --- cron --------------------------------------------------------------------------------------

PARIS = "Europe/Paris"


def cold_at_or_before(schedule: Schedule, t: datetime) -> datetime:
    """slot_at_or_before without the remembered cron window, so the search itself is tested."""
    scheduling._cron_plan.cache_clear()
    return slot_at_or_before(schedule, t)


def slots_from(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    out, t = [], start
    for _ in range(count):
        t = next_slot_after(schedule, t)
        out.append(t)
    return out


CRON_SEQUENCES = [
    pytest.param("0 4 * * 1-5", "UTC", utc(2024, 5, 2, 5),  # Thursday
                 [utc(2024, 5, 3, 4), utc(2024, 5, 6, 4), utc(2024, 5, 7, 4)], id="weekdays-utc"),
    pytest.param("0 4 * * 1-5", PARIS, utc(2024, 1, 4, 5),  # winter: CET = UTC+1
                 [utc(2024, 1, 5, 3), utc(2024, 1, 8, 3)], id="weekdays-paris-winter"),
    pytest.param("0 4 * * 1-5", PARIS, utc(2024, 7, 4, 5),  # summer: CEST = UTC+2
                 [utc(2024, 7, 5, 2), utc(2024, 7, 8, 2)], id="weekdays-paris-summer"),
    pytest.param("30 2 * * *", PARIS, utc(2024, 3, 29, 12),  # spring forward on 31 March: once, at 03:00 CEST
                 [utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)], id="0230-spring-forward"),
    pytest.param("30 2 * * *", PARIS, utc(2024, 10, 25, 12),  # fall back on 27 October: once, at the first 02:30
                 [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)], id="0230-fall-back"),
    pytest.param("0 * * * *", PARIS, utc(2024, 3, 30, 23, 30),  # hourly follows elapsed time: 02:00 does not exist
                 [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)], id="hourly-spring-forward"),
    pytest.param("0 * * * *", PARIS, utc(2024, 10, 26, 23, 30),  # ...and 02:00 happens twice
                 [utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2)], id="hourly-fall-back"),
    pytest.param("@daily", "UTC", utc(2024, 5, 1, 5), [utc(2024, 5, 2), utc(2024, 5, 3)], id="macro"),
]


@pytest.mark.parametrize(("cron", "zone", "start", "expected"), CRON_SEQUENCES)
def test_cron_slots(cron: str, zone: str, start: datetime, expected: list[datetime]) -> None:
    schedule = Schedule(cron=cron, timezone=zone)
    assert slots_from(schedule, start, len(expected)) == expected
    previous = slot_at_or_before(schedule, start)
    for slot in expected:  # the backward view agrees with the forward one, at the microsecond
        assert slot_at_or_before(schedule, slot) == cold_at_or_before(schedule, slot) == slot
        assert slot_at_or_before(schedule, slot - US) == cold_at_or_before(schedule, slot - US) == previous
        assert next_slot_after(schedule, slot - US) == slot
        previous = slot


@pytest.mark.parametrize(("day", "expected"), [
    (utc(2024, 3, 31), [utc(2024, 3, 31, 1)]),  # spring forward: 02:30 runs once, at 03:00 CEST
    (utc(2024, 10, 27), [utc(2024, 10, 27, 0, 30)]),  # fall back: once, at the first 02:30
])
@pytest.mark.parametrize("policy", ["latest", "skip"])
def test_a_ticker_runs_a_0230_job_once_on_dst_days(policy: str, day: datetime, expected: list[datetime]) -> None:
    schedule = Schedule(cron="30 2 * * *", timezone=PARIS)
    assert simulate(schedule, policy, day - timedelta(hours=2), day + timedelta(hours=22)) == expected


def test_cron_due_slots_after_an_outage() -> None:
    schedule = Schedule(cron="0 4 * * 1-5", timezone="UTC")
    friday, tuesday = utc(2024, 5, 3, 4), utc(2024, 5, 7, 9)
    assert due_slots(schedule, friday, tuesday, "latest") == [utc(2024, 5, 7, 4)]
    assert due_slots(schedule, friday, tuesday, "skip") == []


# (expression, zone, a span certain to hold at least one slot)
CRON_PROPERTY = [
    ("30 2 * * *", PARIS, 2), ("0 * * * *", PARIS, 1), ("*/30 2 * * *", PARIS, 2),
    ("15 1 * * 0", "America/New_York", 8), ("0 2 * * *", "Australia/Lord_Howe", 2),
    ("0 0 * * *", "Africa/Cairo", 2), ("*/7 * * * *", "UTC", 1), ("0 4 * * 1-5", "Asia/Kolkata", 4),
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CRON_PROPERTY),
       st.datetimes(datetime(2023, 1, 1), datetime(2026, 1, 1), timezones=st.just(UTC)))
def test_cron_properties(case: tuple[str, str, int], t: datetime) -> None:
    cron, zone, span_days = case
    schedule = Schedule(cron=cron, timezone=zone)
    before, after = slot_at_or_before(schedule, t), next_slot_after(schedule, t)
    assert before <= t < after
    assert next_slot_after(schedule, before) == after  # nothing in between
    assert slot_at_or_before(schedule, after - US) == cold_at_or_before(schedule, after - US) == before
    assert cold_at_or_before(schedule, t) == before
    # The forward chain is the definition: walk it from a span earlier.
    slot, last = before - timedelta(days=span_days), None
    while (slot := next_slot_after(schedule, slot)) <= t:
        last = slot
    assert last == before


# --- run ids -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("slot", "run_id"), [
    (utc(2024, 5, 1, 4), "daily-20240501T040000Z"),
    (datetime(2024, 5, 1, 6, tzinfo=ZoneInfo(PARIS)), "daily-20240501T040000Z"),
    (utc(2024, 12, 31, 23, 59, 59), "daily-20241231T235959Z"),
    (utc(1, 1, 1), "daily-00010101T000000Z"),
])
def test_run_ids(slot: datetime, run_id: str) -> None:
    assert run_id_for("daily", slot) == run_id


def test_run_ids_refuse_what_is_not_a_slot() -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        run_id_for("daily", utc(2024, 5, 1, 4, 0, 0, 1))
    with pytest.raises(ValueError, match="aware"):
        run_id_for("daily", datetime(2024, 5, 1, 4))


# --- conditions --------------------------------------------------------------------------------

def cond(**fields: list[int]) -> SimpleNamespace:
    return SimpleNamespace(**{"months": [], "weekdays": [], "days": [], "hours": [], **fields})


SATURDAY_10PM_NY = utc(2024, 5, 5, 2)  # Sunday 02:00 UTC
CONDITION_CASES = [
    pytest.param([cond(hours=[23])], utc(2024, 5, 2, 3), "America/New_York", True, id="hour-23-new-york"),
    pytest.param([cond(hours=[23])], utc(2024, 5, 2, 3), "UTC", False, id="hour-23-utc"),
    pytest.param([cond(hours=[23])], utc(2024, 1, 2, 4), "America/New_York", True, id="hour-23-new-york-winter"),
    pytest.param([cond(weekdays=[0])], SATURDAY_10PM_NY, "UTC", True, id="sunday-is-0"),
    pytest.param([cond(weekdays=[6])], SATURDAY_10PM_NY, "America/New_York", True, id="saturday-is-6"),
    pytest.param([cond(weekdays=[0])], SATURDAY_10PM_NY, "America/New_York", False, id="not-sunday-in-new-york"),
    pytest.param([cond(weekdays=[1])], utc(2024, 5, 6, 12), "UTC", True, id="monday-is-1"),
    pytest.param([cond(days=[31], months=[5])], utc(2024, 6, 1, 2), "America/New_York", True, id="day-and-month-local"),
    pytest.param([cond(days=[31], months=[5])], utc(2024, 6, 1, 2), "UTC", False, id="day-and-month-utc"),
    pytest.param([cond(months=[5], hours=[3])], utc(2024, 5, 1, 3), "UTC", True, id="and-all-match"),
    pytest.param([cond(months=[5], hours=[4])], utc(2024, 5, 1, 3), "UTC", False, id="and-one-fails"),
    pytest.param([cond(hours=[4]), cond(months=[5])], utc(2024, 5, 1, 3), "UTC", True, id="or-second-matches"),
    pytest.param([cond(hours=[4]), cond(months=[6])], utc(2024, 5, 1, 3), "UTC", False, id="or-none-matches"),
    pytest.param([], utc(2024, 5, 1, 3), "UTC", True, id="empty-list-always"),
    pytest.param([cond()], utc(2024, 5, 1, 3), "UTC", True, id="empty-fields-match-anything"),
    pytest.param([cond(weekdays=[1, 2, 3, 4, 5], hours=[6, 7])], utc(2024, 5, 1, 5), "Europe/Paris", True, id="weekday-morning-paris"),
]


@pytest.mark.parametrize(("conditions", "instant", "zone", "expected"), CONDITION_CASES)
def test_conditions(conditions: list[SimpleNamespace], instant: datetime, zone: str, expected: bool) -> None:
    assert conditions_hold(conditions, instant, zone) is expected


def test_conditions_take_the_pydantic_models_and_tzinfo_objects() -> None:
    conditions = [Condition(weekdays=[0]), Condition(months=[12], days=[25])]
    assert conditions_hold(conditions, SATURDAY_10PM_NY, "UTC")
    assert not conditions_hold(conditions, SATURDAY_10PM_NY, ZoneInfo("America/New_York"))
    assert conditions_hold(conditions, utc(2024, 12, 25, 12), ZoneInfo("Asia/Tokyo"))


def test_conditions_refuse_an_unknown_zone() -> None:
    with pytest.raises(ValidationFailed, match="unknown time zone"):
        conditions_hold([cond(hours=[1])], utc(2024, 5, 1), "Nowhere/Special")

"""Cost digests: each group's bill for the last day or week, compiled once and sent to its channel.

Which groups get which digests is in the Slack settings (``digests`` for every group,
``group_digests`` per group). Every ``tick`` the :class:`DigestScheduler` looks at the last
*complete* period of each kind (daily: yesterday, UTC; weekly: last Monday to Sunday), and once it
has been over for ``grace`` (the cost projection follows the log asynchronously: a job that ended
at 23:59 must be counted first), compiles it into a ``CostDigestCompiled`` on the period's own
stream. A second replica or a restart finds the stream taken: exactly one digest per group and
period. Only the last period is compiled, so turning digests on does not send a year of them.
The Slack reactor turns the event into a message with :func:`digest_notice` (pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from maestro.errors import ConcurrencyConflict
from maestro.events.config import SlackSection
from maestro.events.digests import CostDigestCompiled, DigestTable, digest_stream
from maestro.events.model import Metadata
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.notify.slack_blocks import Links, context, escape, fields, header, section
from maestro.handlers.notify.slack_messages import Notice, Route
from maestro.health import Health
from maestro.projections.cost_queries import cost_items, cost_total, usd

log = logging.getLogger(__name__)
COMPONENT = "cost-digests"


def last_complete_period(period: str, now: dt.datetime) -> tuple[dt.date, dt.date]:
    """The last whole UTC day or Monday-to-Sunday week before ``now``.

    >>> now = dt.datetime(2026, 3, 11, 9, tzinfo=dt.timezone.utc)  # a Wednesday
    >>> last_complete_period("daily", now), last_complete_period("weekly", now)
    ((datetime.date(2026, 3, 10), datetime.date(2026, 3, 10)), (datetime.date(2026, 3, 2), datetime.date(2026, 3, 8)))
    """
    today = now.astimezone(dt.timezone.utc).date()
    if period == "daily":
        day = today - dt.timedelta(days=1)
        return day, day
    monday = today - dt.timedelta(days=today.weekday() + 7)
    return monday, monday + dt.timedelta(days=6)


def previous_period(start: dt.date, end: dt.date) -> tuple[dt.date, dt.date]:
    length = end - start + dt.timedelta(days=1)
    return start - length, end - length


def human_bytes(n: int) -> str:
    """Bytes for people, in powers of 1024 (BigQuery bills by the TiB).

    >>> human_bytes(0), human_bytes(1536), human_bytes(3 * 2**40)
    ('0 B', '1.50 KiB', '3.00 TiB')
    """
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"


def change(now: int, before: int) -> str:
    """The change against the period before.

    >>> change(150, 100), change(50, 100), change(5, 0), change(0, 0)
    ('+50% vs the period before', '-50% vs the period before', 'new: nothing billed the period before', 'no change')
    """
    if before == 0:
        return "new: nothing billed the period before" if now else "no change"
    pct = (now - before) / before * 100
    return f"{pct:+.0f}% vs the period before"


def digest_notice(e: CostDigestCompiled, links: Links, *, key: str) -> Notice:
    """The message of a compiled digest: totals, change, the top tables, links."""
    group = e.group_name or e.group_id
    span = e.start.isoformat() if e.start == e.end else f"{e.start.isoformat()} to {e.end.isoformat()}"
    title = f"{'Daily' if e.period == 'daily' else 'Weekly'} BigQuery costs of {group}: {span}"
    total = f"{human_bytes(e.bytes_billed)} billed, ${usd(e.bytes_billed, e.price_per_tib):,.2f}"
    delta = change(e.bytes_billed, e.previous_bytes_billed)
    query = f"group={e.group_id}&from={e.start.isoformat()}&to={e.end.isoformat()}"
    lines = [
        f"{i}. {links.link('tables', t.table_id, t.name or t.table_id)} — {human_bytes(t.bytes_billed)}, "
        f"${usd(t.bytes_billed, e.price_per_tib):,.2f} ({t.jobs} job{'s' if t.jobs != 1 else ''})"
        for i, t in enumerate(e.top, 1)
    ]
    blocks = [
        header(title),
        fields([("Billed", total), ("Change", escape(delta)), ("Jobs", str(e.jobs)),
                ("Price", f"${e.price_per_tib:,.2f} per TiB")]),
        section("*Top tables*\n" + ("\n".join(lines) if lines else "_nothing billed_")),
        context(links.link("costs", None, "All costs of the period", query) + f" · {escape(group)}"),
    ]
    text = f"{title}. {total} ({delta})."
    if e.top:
        text += " Top: " + ", ".join(f"{t.name or t.table_id} {human_bytes(t.bytes_billed)}" for t in e.top[:3]) + "."
    return Notice("digest", key, text, blocks, Route(None, e.group_id))


async def compile_digest(
    pool: Any, group_id: str, group_name: str | None, period: str, start: dt.date, end: dt.date, *,
    price_per_tib: float, top: int,
) -> CostDigestCompiled:
    items = await cost_items(pool, "table", start=start, end=end, group_id=group_id,
                             price_per_tib=price_per_tib)
    before = await cost_total(pool, start=previous_period(start, end)[0], end=previous_period(start, end)[1],
                              group_id=group_id)
    return CostDigestCompiled(
        group_id=group_id, group_name=group_name, period=period, start=start, end=end,  # type: ignore[arg-type]
        bytes_billed=sum(i["bytes_billed"] for i in items), jobs=sum(i["jobs"] for i in items),
        previous_bytes_billed=before, price_per_tib=price_per_tib,
        top=[DigestTable(table_id=i["table"], name=i["name"], bytes_billed=i["bytes_billed"], jobs=i["jobs"])
             for i in items[:top]],
    )


class DigestScheduler:
    """Compiles each configured group's due digest, once per period (stream-id fenced)."""

    def __init__(self, store: EventStore, config: Any, *, tick: float = 60.0, grace: dt.timedelta = dt.timedelta(minutes=15),
                 health: Health | None = None) -> None:
        self.store, self.pool, self.config = store, store.pool, config
        self.tick_seconds, self.grace = tick, grace
        self.health = health or Health()
        self._task: asyncio.Task[None] | None = None

    async def tick(self, now: dt.datetime | None = None) -> list[str]:
        """Compile what is due at ``now``; returns the streams written."""
        now = now or dt.datetime.now(dt.timezone.utc)
        section = self.config.get("slack") if self.config is not None else SlackSection()
        assert isinstance(section, SlackSection)
        groups = await self.pool.fetch("SELECT group_id, name FROM groups ORDER BY group_id")
        written = []
        for g in groups:
            for period in section.group_digests.get(g["group_id"], section.digests):
                start, end = last_complete_period(period, now)
                over = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
                stream = digest_stream(g["group_id"], period, start)
                if now < over + self.grace or await self.store.stream_version(stream) is not None:
                    continue
                digest = await compile_digest(self.pool, g["group_id"], g["name"], period, start, end,
                                              price_per_tib=self.config.price_per_tib, top=section.digest_top)
                if digest.bytes_billed == 0 and digest.previous_bytes_billed == 0:
                    continue  # nothing billed, nothing to say
                try:
                    await self.store.append(stream, NO_STREAM, [digest], Metadata(actor="system:cost-digests"))
                except ConcurrencyConflict:
                    continue  # another replica compiled it first
                written.append(stream)
        return written

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=COMPONENT)

    async def _loop(self) -> None:
        delay = self.tick_seconds
        while True:
            try:
                await self.tick()
                self.health.set(COMPONENT, "ok", "")
                delay = self.tick_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database outage: say so, and try again
                log.warning("cost digests could not be compiled; retrying", exc_info=True)
                self.health.down(COMPONENT, exc)
                delay = min(delay * 2, 600.0)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.health.forget(COMPONENT)

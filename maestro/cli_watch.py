"""A run followed live: each table's state, elapsed time and bytes, until the run ends.

On a terminal a rich table redraws in place; otherwise (CI logs) one line per change of a table's
state, so the log reads as a timeline. Bytes are a query's bytes processed (from its job's
statistics, fetched once the job has ended) or an import's bytes written (its progress).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table as RichTable

from maestro_client import Maestro, Run, WaitTimeout

POLL = 1.0
_ENDED = ("succeeded", "failed", "skipped", "cancelled")
_STYLE = {"succeeded": "green", "failed": "red", "skipped": "yellow", "cancelled": "yellow"}


def _human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


class _Bytes:
    """Bytes per table: job statistics once a job has ended (asked once), else import progress."""

    def __init__(self, m: Maestro) -> None:
        self.m, self.known = m, {}

    def of(self, t: Any) -> int | None:
        if t.progress and t.progress.get("bytes") is not None:
            return int(t.progress["bytes"])
        if t.job_id is None or t.state not in _ENDED:
            return None
        if t.job_id not in self.known:
            job = self.m.request("GET", f"/api/v1/jobs/{t.job_id}")
            stats = job.get("statistics") or {}
            self.known[t.job_id] = stats.get("bytes_processed")
        return self.known[t.job_id]


def _elapsed(run: Run, t: Any, now: dt.datetime) -> str:
    start = run.planned_at or now
    end = t.updated_at if t.state in _ENDED and t.updated_at else now
    return f"{max((end - start).total_seconds(), 0):.0f}s"


def _view(run: Run, sizes: _Bytes, now: dt.datetime) -> RichTable:
    grid = RichTable(title=f"run {run.id}: {run.status}", show_edge=False, header_style="bold")
    for c in ("TABLE", "STATE", "ELAPSED", "BYTES", "ERROR"):
        grid.add_column(c, overflow="fold")
    for t in run.tables:
        state = f"[{_STYLE[t.state]}]{t.state}[/]" if t.state in _STYLE else t.state
        grid.add_row(t.name, state, _elapsed(run, t, now), _human_bytes(sizes.of(t)), t.error or "")
    return grid


def watch_run(m: Maestro, run_id: str, *, timeout: float | None, live: bool, quiet: bool = False) -> Run:
    """Follow ``run_id`` until it ends (:class:`WaitTimeout` after ``timeout`` s); the last state."""
    deadline = time.monotonic() + timeout if timeout is not None else None
    sizes = _Bytes(m)
    seen: dict[str, str] = {}
    console = Console(stderr=quiet)

    def step() -> Run:
        run = m.run_status(run_id)
        if not live and not quiet:
            for t in run.tables:
                if seen.get(t.table_id) != t.state:
                    seen[t.table_id] = t.state
                    size = _human_bytes(sizes.of(t))
                    extra = f" ({size})" if size else ""
                    click.echo(f"{dt.datetime.now():%H:%M:%S} {t.name}: {t.state}{extra}{': ' + t.error if t.error else ''}")
        return run

    def waited() -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"run {run_id} had not ended after {timeout:.0f} s (it goes on)")
        time.sleep(POLL)

    if not live:
        while not (run := step()).done:
            waited()
        if not quiet:
            click.echo(f"run {run.id} {run.status}")
        return run
    run = step()
    with Live(_view(run, sizes, dt.datetime.now(dt.timezone.utc)), console=console, refresh_per_second=4) as screen:
        while not run.done:
            waited()
            run = step()
            screen.update(_view(run, sizes, dt.datetime.now(dt.timezone.utc)))
    return run

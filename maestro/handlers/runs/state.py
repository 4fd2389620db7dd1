"""What the runner holds in memory about a run: its tables, their states, readiness counters.

Everything here is rebuilt from the ``runs`` projection at start-up (maestro.handlers.runs.recovery),
so losing it (a crash, a lost leadership) loses nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from maestro.events.runs import JobConfig

UPSTREAM_BAD = frozenset({"failed", "skipped", "cancelled"})
TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


@dataclass
class TableState:
    table_id: str
    name: str
    priority: int
    parents: list[str]
    config: JobConfig
    extract: dict[str, Any] | None
    owner_id: str | None
    group_id: str | None
    state: str = "pending"
    attempt: int = 0  # attempts ever made in this run: part of every job id, so never reused
    job_id: str | None = None
    # ``attempt`` when the run was last retried: the retry budget (max_attempts) counts from here,
    # so a retried run gets its attempts anew while job ids stay unique.
    retry_base: int = 0

    def may_retry(self) -> bool:
        return self.attempt - self.retry_base < self.config.max_attempts


@dataclass
class RunState:
    """One run in memory. Readiness is incremental: ``unmet`` counts each table's parents that have
    not succeeded, and ``changed`` queues the tables whose state moved, so deciding after a
    completion costs the completed table's children, not the whole run (a run's parents are all
    its ancestors in the run: scanning every table's parents on every completion was quadratic)."""

    run_id: str
    tables: dict[str, TableState]
    workers: int | None
    cancel_requested: bool = False
    in_flight: int = 0
    children: dict[str, list[str]] = field(default_factory=dict)
    unmet: dict[str, int] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # table ids whose state moved, to propagate
    rescan: bool = True  # look at every pending table (after loading, a retry, a cancel)
    finishing: bool = False
    round: int = 0  # how many times the run was retried: skips are recorded once per round
    # Set once the run's RunFinished is recorded and the run has left memory.
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # The correlation id of the run's RunPlanned: every job event of the run carries it, so
    # "everything this run did" is one audit query.
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        for t in self.tables.values():
            self.unmet[t.table_id] = sum(1 for p in t.parents if self.tables[p].state != "succeeded")
            for p in t.parents:
                self.children.setdefault(p, []).append(t.table_id)

    def moved(self, table: TableState, state: str) -> None:
        """Set a table's state; a success or a dead end is propagated to its children later."""
        table.state = state
        self.changed.append(table.table_id)


def memory_state(projected: str) -> str:
    """The runner's view of a projected table state after a restart."""
    return {"planned": "running"}.get(projected, projected)


@dataclass(frozen=True)
class RunnerConfig:
    workers: int = 16
    # The first poll after the insert (whose own answer already said whether the job ended).
    poll_initial: float = 0.2
    poll_max: float = 5.0
    retry_delay: float = 1.0
    bucket: str = "maestro-local"
    # A job still unfinished this long after it was planned is cancelled and failed ("timeout"):
    # nothing waits forever on a job BigQuery never finishes or that cannot be reached.
    job_timeout: float = 6 * 3600.0
    # Longest server-side wait for a query job's end in one call (jobs.getQueryResults timeoutMs).
    wait_max: float = 10.0
    # A query job is polled (backoff capped at early_poll_max) for its first wait_after seconds,
    # then awaited server-side.
    wait_after: float = 3.0
    early_poll_max: float = 1.0
    # Server-side waits after wait_after (Google); off: polling capped at early_poll_max throughout.
    server_wait: bool = True
    # Tests: every external table waits this many seconds for its upload instead of its own
    # wait_timeout (which the API keeps at 60 s or more).
    external_wait_override: float | None = None


class Slot:
    """One job's place among the workers, given back exactly once however its task ends."""

    def __init__(self, runner: Any, run: RunState | None) -> None:
        self.runner, self.run, self.held = runner, run, True
        runner.in_flight += 1
        if run is not None:
            run.in_flight += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.runner.in_flight -= 1
            if self.run is not None:
                self.run.in_flight -= 1


def extract_config(table: TableState, run_id: str, bucket: str) -> JobConfig:
    """The extract job that follows a table's query: its format, compression and file pattern."""
    settings = table.extract or {}
    fmt = settings.get("format", "csv")
    compression = settings.get("compression", "none")
    suffix = {"csv": "csv", "ndjson": "json", "avro": "avro", "parquet": "parquet"}[fmt]
    if compression == "gzip" and fmt in ("csv", "ndjson"):
        suffix += ".gz"
    dataset, name = table.config.destination.split(".")[-2:]
    uri = f"gs://{bucket}/extracts/{dataset}/{name}/{run_id}/part-*.{suffix}"
    return JobConfig(
        kind="extract", project=table.config.project, source=table.config.destination,
        destination_uris=[uri], format=fmt, compression=compression, labels=table.config.labels,
    )

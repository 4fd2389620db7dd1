"""What each client call does, written once for the sync and the async client.

An operation is a generator that yields *steps* -- :class:`Call` (an API request; the driver sends
back the decoded JSON), :class:`Put` (a file to a signed URL) and :class:`Sleep` -- and returns its
result. ``Maestro`` drives them with httpx.Client and ``time.sleep``, ``AsyncMaestro`` with
httpx.AsyncClient and ``asyncio.sleep``: the waiting, polling and error logic lives here only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from maestro_client.errors import MaestroClientError, RunFailed, WaitTimeout
from maestro_client.models import Column, Costs, Extract, Load, Run, Status, TableInfo, error_location


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None


@dataclass(frozen=True)
class Put:
    url: str
    path: str
    content_type: str


@dataclass(frozen=True)
class Sleep:
    seconds: float


Op = Generator[Any, Any, Any]


def _pauses(first: float, most: float) -> Generator[float, None, None]:
    """Polling pauses: ``first`` growing by half each time up to ``most``, with 10 % jitter (many
    waiting clients do not poll in step)."""
    pause = first
    while True:
        yield pause * random.uniform(0.9, 1.1)
        pause = min(pause * 1.5, most)


def _check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise WaitTimeout(f"timed out waiting for {what}")


def _sleep(pauses: Generator[float, None, None], deadline: float | None) -> Sleep:
    pause = next(pauses)
    if deadline is not None:
        pause = max(0.0, min(pause, deadline - time.monotonic()))
    return Sleep(pause)


def _deadline(timeout: float | None) -> float | None:
    return time.monotonic() + timeout if timeout is not None else None


def table_path(table_id: str, tail: str = "") -> str:
    return f"/api/v1/tables/{quote(table_id, safe='')}{tail}"


def lookup(ref: str | int) -> Op:
    body = yield Call("GET", "/api/v1/table-lookup", params={"ref": str(ref)})
    return TableInfo.from_json(body)


def status(table_id: str) -> Op:
    return Status.from_json((yield Call("GET", table_path(table_id, "/status"))))


def _failed(s: Status, name: str) -> RunFailed:
    where = f" at line {s.line}, column {s.column}" if s.line is not None else ""
    return RunFailed(f"{name} failed{where}: {s.error}", error=s.error, line=s.line, column=s.column,
                     run_id=s.run_id, job_id=s.job_id, table=name)


def wait(table: TableInfo, timeout: float | None, poll: float, max_poll: float, running: bool = False,
         after: Status | None = None) -> Op:
    """Until the table's next success (or, ``running``, until it runs: an external table's run
    waiting for its upload). A failure after the wait began raises :class:`RunFailed`. ``after``: a
    status read earlier, to count from (so a run started in between is not missed)."""
    deadline = _deadline(timeout)
    first: Status = after if after is not None else (yield from status(table.id))
    pauses = _pauses(poll, max_poll)
    current = first if after is None else (yield from status(table.id))
    while True:
        if running and current.running:
            return current
        if not running and current.last_ok_at is not None and (first.last_ok_at is None or current.last_ok_at > first.last_ok_at):
            return current
        if current.state == "failed" and current.at != first.at:
            raise _failed(current, table.qualified_name)
        _check_deadline(deadline, f"{table.qualified_name} to {'start running' if running else 'succeed'}")
        yield _sleep(pauses, deadline)
        current = yield from status(table.id)


def run_table(table: TableInfo, *, wait_for: bool, timeout: float | None, descendants: bool,
              poll: float, max_poll: float) -> Op:
    body = yield Call("POST", table_path(table.id, "/run"), json={"descendants": descendants})
    run_id = body["id"]
    if not wait_for:
        return (yield from run_status(run_id))
    return (yield from wait_run(run_id, timeout, poll, max_poll, table=table))


def run_status(run_id: str) -> Op:
    return Run.from_json((yield Call("GET", f"/api/v1/runs/{quote(run_id, safe='')}")))


def _run_failure(run: Run, table: TableInfo | None) -> RunFailed:
    mine = [t for t in run.tables if table is not None and t.table_id == table.id]
    failed = [t for t in run.tables if t.state == "failed"]
    culprit = (mine if mine and mine[0].state != "succeeded" else []) or failed or list(run.tables)
    entry = culprit[0] if culprit else None
    error = entry.error if entry is not None else run.reason
    line_column = error_location(error)
    name = entry.name if entry is not None else run.id
    where = f" at line {line_column[0]}, column {line_column[1]}" if line_column else ""
    return RunFailed(
        f"run {run.id} {run.status}: {name}{where}: {error or run.reason or 'no error recorded'}",
        error=error, line=line_column[0] if line_column else None, column=line_column[1] if line_column else None,
        run_id=run.id, job_id=entry.job_id if entry is not None else None, table=name,
    )


def wait_run(run_id: str, timeout: float | None, poll: float, max_poll: float, table: TableInfo | None = None) -> Op:
    """Until the run ends; anything but success raises :class:`RunFailed`."""
    deadline = _deadline(timeout)
    pauses = _pauses(poll, max_poll)
    while True:
        run: Run = yield from run_status(run_id)
        if run.done:
            if run.status != "succeeded":
                raise _run_failure(run, table)
            return run
        _check_deadline(deadline, f"run {run_id} to end")
        yield _sleep(pauses, deadline)


def extract(table: TableInfo) -> Op:
    body = yield Call("GET", table_path(table.id, "/extracts"))
    return Extract.from_json(body["extract"]) if body.get("extract") else None


def required_extract(table: TableInfo) -> Op:
    found: Extract | None = yield from extract(table)
    if found is None or not found.files:
        raise MaestroClientError(f"{table.qualified_name} has no extract yet (it extracts after a successful run)")
    return found


def schema(table: TableInfo) -> Op:
    body = yield Call("GET", table_path(table.id, "/bigquery"))
    resource = body.get("table")
    if resource is None:
        raise MaestroClientError(f"{table.qualified_name} is not in BigQuery yet (it has never run)")
    return [Column.from_json(f) for f in (resource.get("schema") or {}).get("fields") or ()]


def upload(table: TableInfo, path: str, timeout: float | None, poll: float, max_poll: float) -> Op:
    """PUT the file to the table's signed upload URL, ask for its load, wait for the load."""
    if table.kind != "external":
        raise MaestroClientError(f"{table.qualified_name} is a {table.kind} table: only external tables take uploads")
    body = yield Call("GET", table_path(table.id))
    target = body.get("upload")
    if not target:
        raise MaestroClientError(f"no upload URL for {table.qualified_name}: only its group's members may upload")
    yield Put(target["url"], path, target["content_type"])
    planned = yield Call("POST", table_path(table.id, "/load"), json={"object": target["object"]})
    return (yield from wait_job(planned["job_id"], target["object"], timeout, poll, max_poll))


def wait_job(job_id: str, uri: str, timeout: float | None, poll: float, max_poll: float) -> Op:
    deadline = _deadline(timeout)
    pauses = _pauses(poll, max_poll)
    while True:
        job = yield Call("GET", f"/api/v1/jobs/{quote(job_id, safe='')}")
        if job["state"] == "succeeded":
            return Load.from_job(job, uri)
        if job["state"] in ("failed", "cancelled"):
            line_column = error_location(job.get("error"))
            raise RunFailed(f"load {job_id} of {uri} {job['state']}: {job.get('error')}", error=job.get("error"),
                            line=line_column[0] if line_column else None,
                            column=line_column[1] if line_column else None, job_id=job_id)
        _check_deadline(deadline, f"load {job_id}")
        yield _sleep(pauses, deadline)


def runs(status_: str | None, frequency: str | None, limit: int, offset: int) -> Op:
    params = {k: v for k, v in {"status": status_, "frequency": frequency, "limit": limit, "offset": offset}.items()
              if v is not None}
    body = yield Call("GET", "/api/v1/runs", params=params)
    return [Run.from_json(r) for r in body["runs"]]


def costs(by: str, from_: Any, to: Any, group: str | None) -> Op:
    params = {"by": by, "from": _day(from_), "to": _day(to), "group": group}
    body = yield Call("GET", "/api/v1/costs", params={k: v for k, v in params.items() if v is not None})
    return Costs.from_json(body)


def _day(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value is not None else None)


def tables(**filters: Any) -> Op:
    """Every table matching the filters (the pages are followed)."""
    found: list[dict[str, Any]] = []
    params = {k: v for k, v in filters.items() if v is not None}
    while True:
        body = yield Call("GET", "/api/v1/tables", params={**params, "offset": len(found), "limit": 500})
        found.extend(body["tables"])
        if not body["tables"] or len(found) >= body["total"]:
            return found

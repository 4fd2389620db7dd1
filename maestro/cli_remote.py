"""``maestro`` against a server, through its API (maestro-client): tables, runs, costs, plans,
loads and imports. Tables for people (rich), ``--json`` for scripts; docs/cli.md.

    maestro login --url https://maestro.example.com --token mae_...
    maestro tables list --dataset analytics
    maestro run analytics.daily_orders --wait        # live progress; exit 1 if it fails
    maestro load partners.orders orders.csv
    maestro costs --by group --from 2026-11-01
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table as RichTable

from maestro.cli_connect import connect, remote_command, write_profile
from maestro.cli_watch import watch_run
from maestro_client import Maestro, Run

console = Console()


def _json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _grid(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    grid = RichTable(title=title, show_edge=False, header_style="bold")
    for c in columns:
        grid.add_column(c, overflow="fold")
    for row in rows:
        grid.add_row(*("" if v is None else str(v) for v in row))
    console.print(grid)


def _when(value: dt.datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")(fn)


# ---------------------------------------------------------------------- login
@click.command("login")
@click.option("--url", required=True, help="The Maestro server, e.g. https://maestro.example.com")
@click.option("--token", prompt=True, hide_input=True, help="An API token (prompted when not given).")
@click.option("--profile", default="default", show_default=True, help="The profile's name.")
@click.option("--default/--no-default", "make_default", default=True, help="Make it the default profile.")
def login_command(url: str, token: str, profile: str, make_default: bool) -> None:
    """Check a token against a server and save both as a profile."""
    from maestro.cli_connect import reported

    with reported(), Maestro(url, token) as m:
        me = m.request("GET", "/api/v1/me")
    path = write_profile(profile, url.rstrip("/"), token, make_default=make_default)
    who = me.get("email") or me.get("name") or me.get("id") or me.get("user_id")
    click.echo(f"logged in to {url} as {who}; saved as profile {profile!r} in {path}")


# ---------------------------------------------------------------------- tables
@click.group("tables")
def tables_group() -> None:
    """List, show and run tables on a server."""


@tables_group.command("list")
@click.option("--dataset", default=None)
@click.option("--kind", type=click.Choice(["summary", "import", "external"]), default=None)
@click.option("--search", "q", default=None, help="Text in name, description or SQL.")
@json_option
@remote_command
def tables_list(dataset: str | None, kind: str | None, q: str | None, as_json: bool, url: str | None,
                token: str | None, profile: str | None) -> None:
    """The catalog's live tables."""
    with connect(url, token, profile) as m:
        tables = m.tables(dataset=dataset, kind=kind, q=q)
    if as_json:
        return _json(tables)
    _grid(f"{len(tables)} table(s)", ["TABLE", "KIND", "FREQUENCY", "GROUP", "VERSION", "UPDATED"], [
        [f"{t['dataset']}.{t['name']}", t["kind"], t.get("frequency_id"), t.get("group_id"), t["version"],
         _when(t["updated_at"])] for t in tables
    ])


@tables_group.command("show")
@click.argument("table")
@json_option
@remote_command
def tables_show(table: str, as_json: bool, url: str | None, token: str | None, profile: str | None) -> None:
    """A table (by number, id or dataset.name): its definition and what it is doing."""
    with connect(url, token, profile) as m:
        t = m.table(table)
        body = m.request("GET", f"/api/v1/tables/{t.id}")
        status = t.status()
    if as_json:
        return _json({**body, "number": t.info.number, "status": status.raw})
    where = f" (line {status.line}, column {status.column})" if status.line is not None else ""
    _grid(f"{t.info.qualified_name}  #{t.info.number}", ["FIELD", "VALUE"], [
        ["id", t.id], ["kind", t.info.kind], ["state", status.state],
        ["error", (status.error or "") + where], ["last success", _when(status.last_ok_at)],
        ["frequency", body.get("frequency_id")], ["group", body.get("group_id")], ["owner", body.get("owner_id")],
        ["version", body.get("version")], ["parents", ", ".join(body.get("dependencies", {}).get("parents", []))],
    ])
    if body.get("query"):
        console.print(body["query"], markup=False, highlight=False)


def _run_table(m: Maestro, table: str, wait: bool, descendants: bool, timeout: float | None, as_json: bool) -> None:
    t = m.table(table)
    started = t.run(wait=False, descendants=descendants)
    if not wait:
        return _json(started.raw) if as_json else click.echo(f"started run {started.id} of {t.info.qualified_name}")
    run = watch_run(m, started.id, timeout=timeout, live=not as_json and sys.stdout.isatty(), quiet=as_json)
    if as_json:
        _json(run.raw)
    if run.status != "succeeded":
        sys.exit(1)


@tables_group.command("run")
@click.argument("table")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it ends (exit 1 if it fails).")
@click.option("--descendants", is_flag=True, help="Also run every table downstream.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most (exit 1 after).")
@json_option
@remote_command
def tables_run(table: str, wait: bool, descendants: bool, timeout: float | None, as_json: bool,
               url: str | None, token: str | None, profile: str | None) -> None:
    """Run TABLE now."""
    with connect(url, token, profile) as m:
        _run_table(m, table, wait, descendants, timeout, as_json)


@click.command("run")
@click.argument("table")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it ends (exit 1 if it fails).")
@click.option("--descendants", is_flag=True, help="Also run every table downstream.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most (exit 1 after).")
@json_option
@remote_command
def run_command(table: str, wait: bool, descendants: bool, timeout: float | None, as_json: bool,
                url: str | None, token: str | None, profile: str | None) -> None:
    """Run TABLE now (the same as `maestro tables run`); --wait shows its progress live."""
    with connect(url, token, profile) as m:
        _run_table(m, table, wait, descendants, timeout, as_json)


# ---------------------------------------------------------------------- runs
@click.group("runs")
def runs_group() -> None:
    """Runs on a server: list, show, watch."""


def _run_rows(runs: list[Run]) -> list[list[Any]]:
    return [[r.id, r.status, r.trigger, r.frequency_id, _when(r.planned_at), _when(r.finished_at),
             " ".join(f"{k}={v}" for k, v in sorted(r.counts.items()))] for r in runs]


@runs_group.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "skipped"]))
@click.option("--frequency", default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@json_option
@remote_command
def runs_list(status: str | None, frequency: str | None, limit: int, as_json: bool, url: str | None,
              token: str | None, profile: str | None) -> None:
    """The latest runs, newest first."""
    with connect(url, token, profile) as m:
        runs = m.runs(status=status, frequency=frequency, limit=limit)
    if as_json:
        return _json([r.raw for r in runs])
    _grid(None, ["RUN", "STATUS", "TRIGGER", "FREQUENCY", "PLANNED", "FINISHED", "COUNTS"], _run_rows(runs))


@runs_group.command("show")
@click.argument("run_id")
@json_option
@remote_command
def runs_show(run_id: str, as_json: bool, url: str | None, token: str | None, profile: str | None) -> None:
    """A run and each of its tables."""
    with connect(url, token, profile) as m:
        run = m.run_status(run_id)
    if as_json:
        return _json(run.raw)
    _grid(f"run {run.id}: {run.status}", ["TABLE", "STATE", "ATTEMPT", "UPDATED", "ERROR"], [
        [t.name, t.state, t.attempt, _when(t.updated_at), t.error] for t in run.tables
    ])


@runs_group.command("watch")
@click.argument("run_id")
@click.option("--timeout", type=float, default=None, help="Seconds to watch at most (exit 1 after).")
@remote_command
def runs_watch(run_id: str, timeout: float | None, url: str | None, token: str | None, profile: str | None) -> None:
    """Follow a run until it ends; exit 1 unless it succeeded."""
    with connect(url, token, profile) as m:
        run = watch_run(m, run_id, timeout=timeout, live=sys.stdout.isatty())
    if run.status != "succeeded":
        sys.exit(1)


# ---------------------------------------------------------------------- costs, plan
@click.command("costs")
@click.option("--by", type=click.Choice(["user", "group", "table", "run", "day"]), default="table", show_default=True)
@click.option("--from", "from_", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First day (YYYY-MM-DD).")
@click.option("--to", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day (YYYY-MM-DD).")
@click.option("--group", default=None, help="Only jobs billed to this group.")
@json_option
@remote_command
def costs_command(by: str, from_: dt.datetime | None, to: dt.datetime | None, group: str | None, as_json: bool,
                  url: str | None, token: str | None, profile: str | None) -> None:
    """Bytes billed and dollars, by user, group, table, run or day."""
    with connect(url, token, profile) as m:
        costs = m.costs(by=by, from_=from_.date() if from_ else None, to=to.date() if to else None, group=group)
    if as_json:
        return _json({"by": costs.by, "price_per_tib": costs.price_per_tib, "usd": costs.usd,
                      "bytes_billed": costs.bytes_billed, "items": [i.__dict__ for i in costs.items]})
    _grid(f"costs by {by}: ${costs.usd:.2f} ({costs.bytes_billed:,} bytes billed)",
          [by.upper(), "NAME", "JOBS", "BYTES BILLED", "SLOT MS", "USD"],
          [[i.key, i.name, i.jobs, f"{i.bytes_billed:,}", f"{i.slot_ms:,}", f"{i.usd:.4f}"] for i in costs.items])


@click.command("plan")
@click.argument("frequency")
@json_option
@remote_command
def plan_command(frequency: str, as_json: bool, url: str | None, token: str | None, profile: str | None) -> None:
    """What FREQUENCY's next run would do (by id or name): its tables in order, and the price."""
    with connect(url, token, profile) as m:
        known = m.request("GET", "/api/v1/frequencies")["frequencies"]
        match = [f for f in known if frequency in (f["id"], f["name"])]
        if not match:
            names = ", ".join(sorted(f["name"] for f in known)) or "none"
            raise click.UsageError(f"no frequency {frequency!r}; frequencies: {names}")
        plan = m.request("GET", f"/api/v1/frequencies/{match[0]['id']}/plan")
    if as_json:
        return _json(plan)
    total = plan["total"]
    _grid(f"next run of {match[0]['name']} at {_when(plan['slot'])}: {len(plan['tables'])} table(s), "
          f"~{total['bytes_processed']:,} bytes, ~${total['usd']:.4f}",
          ["#", "TABLE", "KIND", "PRIORITY", "BYTES", "USD", "PROBLEM"],
          [[i + 1, t["name"], t["kind"], t["priority"], f"{t['estimate']['bytes_processed']:,}",
            f"{t['estimate']['usd']:.4f}", (t["estimate"].get("error") or {}).get("message")]
           for i, t in enumerate(plan["tables"])])
    for name, why in sorted((plan.get("skipped") or {}).items()):
        click.echo(f"  skipped {name}: {why}")


# ---------------------------------------------------------------------- load, import
@click.command("load")
@click.argument("table")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the load at most.")
@json_option
@remote_command
def load_command(table: str, file: str, timeout: float | None, as_json: bool, url: str | None,
                 token: str | None, profile: str | None) -> None:
    """Upload FILE to the external TABLE and wait for its load (exit 1 if it fails)."""
    with connect(url, token, profile) as m:
        load = m.table(table).upload(file, timeout=timeout)
    if as_json:
        return _json(load.raw)
    click.echo(f"loaded {load.output_rows} row(s) from {file} into {table} (job {load.job_id})")


@click.command("import")
@click.argument("table")
@click.option("--full", is_flag=True, help="Re-import everything (an incremental table starts over).")
@click.option("--wait/--no-wait", default=False, help="Follow the run until it ends (exit 1 if it fails).")
@click.option("--timeout", type=float, default=None)
@json_option
@remote_command
def import_command(table: str, full: bool, wait: bool, timeout: float | None, as_json: bool, url: str | None,
                   token: str | None, profile: str | None) -> None:
    """Run the import TABLE now (--full: re-import it in full)."""
    with connect(url, token, profile) as m:
        t = m.table(table)
        if t.info.kind != "import":
            raise click.UsageError(f"{t.info.qualified_name} is a {t.info.kind} table, not an import")
        if full:
            m.request("POST", f"/api/v1/tables/{t.id}/reimport", json={"reason": "maestro import --full"})
        _run_table(m, t.id, wait, False, timeout, as_json)


COMMANDS = (login_command, tables_group, run_command, runs_group, costs_command, plan_command, load_command,
            import_command)

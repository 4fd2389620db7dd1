"""``maestro apply DIR`` and ``maestro export DIR``: the catalog as a folder of SQL files.

The layout and the header format are described in :mod:`maestro.handlers.catalog.apply`.

Exit codes (terraform's, with our 2 for bad input as everywhere in the ``maestro`` CLI):

* 0 — done: applied, exported, or (``--dry-run``) the plan was shown;
* 1 — an unexpected failure (database unreachable, an apply interrupted part-way by a concurrent
  writer: run it again);
* 2 — invalid input, nothing applied: bad files (each listed as ``path:line:column: message``),
  a dependency cycle, a plan the catalog no longer matches, a bad option;
* 3 — only with ``--dry-run --detailed-exitcode``: the catalog differs from the folder (for CI
  drift checks; without the flag a dry run exits 0 either way).

These commands print their own report on stdout and do not configure logging, so only warnings
and errors of the libraries reach stderr.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

import click

from maestro.cli_connect import via_api
from maestro.cli_options import database_options
from maestro.cli_remote_admin import remote_apply, remote_export
from maestro.errors import MaestroError
from maestro.settings import Settings, load_settings

EXIT_FAILED, EXIT_INVALID, EXIT_CHANGES = 1, 2, 3


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container running as a bare uid)
        return "cli:unknown"


def _fail(exc: MaestroError, applying: bool = False) -> None:
    refused = applying and exc.code not in ("folder_invalid", "apply_interrupted")
    click.echo(f"error: {exc.message}{'; nothing was applied' if refused else ''}", err=True)
    for problem in getattr(exc, "problems", ()):
        click.echo(f"  {problem}", err=True)
    interrupted = exc.code == "apply_interrupted" or exc.status >= 500
    sys.exit(EXIT_FAILED if interrupted else EXIT_INVALID)


@click.command("apply")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@via_api(remote_apply)
@database_options
@click.option("--dry-run", is_flag=True, help="Show the plan and check it; change nothing.")
@click.option("--prune", is_flag=True, help="Delete live tables that are not in DIRECTORY.")
@click.option("--actor", default=None, help="Who the events are attributed to (default cli:<login>).")
@click.option(
    "--detailed-exitcode", is_flag=True, help="With --dry-run: exit 3 when there are changes."
)
def apply_command(
    directory: Path, dry_run: bool, prune: bool, actor: str | None, detailed_exitcode: bool,
    **flags: Any,
) -> None:
    """Sync DIRECTORY (<dataset>/<name>.sql, settings in a /*--- YAML ---*/ header or a
    <name>.yaml sidecar) into the catalog: create and update tables, delete with --prune."""
    from maestro.events.model import Metadata
    from maestro.handlers.catalog import apply, folder

    settings = load_settings(**flags)
    who = Metadata(actor=actor or _default_actor())

    async def go() -> apply.Report:
        # Read and check every file before starting anything: bad input fails fast.
        specs = folder.read_folder(directory, default_project=settings.project)
        runtime = await _open(settings)
        try:
            rows = await apply.load_rows(runtime.catalog)
            plan = apply.plan(specs, rows, prune)
            for change in plan.changes:
                click.echo(change.describe())
            if plan.kept:
                click.echo(
                    f"  ({len(plan.kept)} live table(s) not in {directory} are kept; "
                    "--prune deletes them)"
                )
            return await apply.execute(plan, runtime.catalog, who, dry_run=dry_run)
        finally:
            await runtime.close()

    try:
        report = asyncio.run(go())
    except MaestroError as exc:
        _fail(exc, applying=not dry_run)
        return
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(report.summary())
    if dry_run and detailed_exitcode and report.plan.has_changes:
        sys.exit(EXIT_CHANGES)


@click.command("export")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@via_api(remote_export)
@database_options
def export_command(directory: Path, **flags: Any) -> None:
    """Write the live catalog to DIRECTORY in the layout `maestro apply` reads. Table files of
    tables not in the catalog are removed; other files are left alone. DIRECTORY must be new,
    empty, or a previous export (it has a .maestro-export file)."""
    from maestro.handlers.catalog import apply, folder

    settings = load_settings(**flags)

    async def go() -> folder.ExportResult:
        folder.check_export_target(directory)  # before connecting: a wrong folder fails fast
        runtime = await _open(settings)
        try:
            rows = await apply.load_rows(runtime.catalog)
        finally:
            await runtime.close()
        return folder.export(rows, directory)

    try:
        result = asyncio.run(go())
    except MaestroError as exc:
        _fail(exc)
        return
    click.echo(result.summary())


async def _open(settings: Settings) -> Any:
    from maestro.runtime import open_runtime

    return await open_runtime(settings, follow=False)

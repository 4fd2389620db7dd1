"""The ``maestro`` command line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from maestro.cli_connect import via_api
from maestro.cli_options import command_settings, database_options, run
from maestro.cli_remote_admin import remote_token_create
from maestro.errors import MaestroError

log = logging.getLogger("maestro")


@click.group()
@click.version_option(package_name="maestro")
def main() -> None:
    """Maestro: a SQL-centric, event-sourced orchestrator for BigQuery."""


@main.command()
@database_options
@click.option("--host", default=None, help="Listen address (env MAESTRO_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (env MAESTRO_PORT).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None)
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default=None,
              help="auto (default): text on a terminal, JSON otherwise (env MAESTRO_LOG_FORMAT).")
@click.pass_context
def serve(ctx: click.Context, **flags: Any) -> None:
    """Run the service: HTTP API, projections and reactors, until SIGTERM/SIGINT."""
    from aiohttp import web

    from maestro.http.app import create_app

    from maestro.http.announce import announce

    settings = command_settings(**flags)
    app = create_app(settings)
    app.on_startup.append(announce)

    async def announce_login_link(app: web.Application) -> None:
        # As Jupyter does: with no identity provider, the way into the UI is printed at start-up.
        from maestro.http.ui.signin import local_login_link

        link = await local_login_link(app)
        if link is not None:
            click.echo(f"\n    Open Maestro (a one-time login link for the bootstrap administrator, valid 15 minutes;"
                       f"\n    `maestro login-link` makes another):\n\n    {link}\n", err=True)

    app.on_startup.append(announce_login_link)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout,
            print=lambda msg: log.info(msg.strip()),
            access_log=logging.getLogger("aiohttp.access"),
            handle_signals=True,
        )
    except MaestroError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


@main.command()
@database_options
@click.pass_context
def migrate(ctx: click.Context, **flags: Any) -> None:
    """Apply pending schema migrations and exit."""
    settings = command_settings(**flags)

    async def go() -> dict[str, Any]:
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        await runtime.close()
        return runtime.started

    started = run(go)
    applied = started["migrations_applied"]
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@main.group()
def projections() -> None:
    """Inspect and rebuild projections (read models)."""


@projections.command("status")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def projections_status(ctx: click.Context, as_json: bool, **flags: Any) -> None:
    """Show each projection's checkpoint and lag."""
    settings = command_settings(**flags)

    async def go() -> list[dict[str, Any]]:
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        try:
            return [s.to_dict() for s in await runtime.projections.status()]
        finally:
            await runtime.close()

    rows = run(go)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':<24} {'MODE':<7} {'POSITION':>10} {'LAG':>8}  REBUILT")
    for r in rows:
        click.echo(
            f"{r['name']:<24} {r['mode']:<7} {r['position']:>10} {r['lag']:>8}  {r['rebuilt_at'] or '-'}"
        )


@projections.command("rebuild")
@click.argument("name", required=False)
@database_options
@click.pass_context
def projections_rebuild(ctx: click.Context, name: str | None, **flags: Any) -> None:
    """Rebuild NAME (or every projection) from position 0."""
    settings = command_settings(**flags)

    async def go() -> list[tuple[str, int, float]]:
        import time

        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        try:
            names = [name] if name else list(runtime.projections.projections)
            done = []
            for n in names:
                t0 = time.perf_counter()
                count = await runtime.projections.rebuild(n)
                done.append((n, count, time.perf_counter() - t0))
            return done
        finally:
            await runtime.close()

    for n, count, seconds in run(go):
        click.echo(f"rebuilt {n}: {count} events in {seconds:.2f}s")


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@via_api(remote_token_create)
@database_options
@click.option(
    "--user", "user_id", default="bootstrap-admin", show_default=True,
    help="User the token acts as; a missing one is created as a service user (no login).",
)
@click.option("--name", default="cli", show_default=True, help="A name to recognise the token by.")
@click.option("--admin/--no-admin", default=False, help="Make a new service user an administrator, or promote the user.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None, help="Expire after N days.")
@click.pass_context
def token_create(
    ctx: click.Context, user_id: str, name: str, admin: bool, expires_in_days: int | None, **flags: Any
) -> None:
    """Create an API token and print it (it is shown only this once)."""
    import datetime as dt
    import getpass

    from maestro.events import Metadata

    settings = command_settings(**flags)
    expires = (
        dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=expires_in_days) if expires_in_days else None
    )

    async def go() -> tuple[str, str]:
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        actor = Metadata(actor=f"cli:{getpass.getuser()}")
        try:
            # Whoever runs the CLI holds the database: the same trust as the bootstrap token.
            return await runtime.tokens.create(user_id, name, actor, expires_at=expires, admin=admin)
        finally:
            await runtime.close()

    token_id, secret = run(go)
    click.echo(secret)
    click.echo(f"token {token_id} for {user_id} ({'admin' if admin else 'user'}); store it now, it is not kept", err=True)


@main.command("login-link")
@database_options
@click.option("--user", "user_id", default="bootstrap-admin", show_default=True, help="The user the link signs in.")
@click.option("--minutes", type=click.IntRange(1, 24 * 60), default=15, show_default=True, help="How long the link works.")
@click.pass_context
def login_link(ctx: click.Context, user_id: str, minutes: int, **flags: Any) -> None:
    """Print a one-time link that opens a browser session (local mode: no identity provider)."""
    import datetime as dt
    import getpass

    from maestro.events import Metadata

    settings = command_settings(**flags)

    async def go() -> str:
        from maestro.handlers.people.login_links import LoginLinks
        from maestro.handlers.people.tokens import BOOTSTRAP_USER
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        actor = Metadata(actor=f"cli:{getpass.getuser()}")
        try:
            if user_id == BOOTSTRAP_USER:  # a database from before users existed has none yet
                await runtime.users.ensure_service_user(BOOTSTRAP_USER, "bootstrap admin", actor, admin=True)
            # Whoever runs the CLI holds the database: the same trust as `maestro token create`.
            links = LoginLinks(runtime.store, runtime.users, runtime.sessions)
            token, _ = await links.create(user_id, actor, lifetime=dt.timedelta(minutes=minutes))
            return token
        finally:
            await runtime.close()

    from maestro.http.ui.signin import link_url

    click.echo(link_url(settings.base_url, run(go)))
    click.echo(f"a one-time login link for {user_id}, valid {minutes} minutes", err=True)


from maestro.cli_catalog import apply_command, export_command  # noqa: E402
from maestro.cli_config import config_group, secrets_group  # noqa: E402
from maestro.cli_remote import COMMANDS as REMOTE_COMMANDS  # noqa: E402

for _command in (apply_command, export_command, config_group, secrets_group, *REMOTE_COMMANDS):
    main.add_command(_command)


if __name__ == "__main__":
    main()

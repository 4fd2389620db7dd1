"""``maestro config`` and ``maestro secrets``: the live configuration and the master secret.

Secrets never go on the command line (they would show in ``ps`` and in shell history): they are
read from a hidden prompt (``--prompt FIELD``, which also reads a pipe) or a file
(``--from-file FIELD=PATH``).
"""

from __future__ import annotations

import getpass
import json
import typing
from pathlib import Path
from typing import Any

import click

from maestro.cli_connect import via_api
from maestro.cli_options import command_settings, database_options, run
from maestro.events.config import SECTIONS, SINGLE_SECTIONS
from maestro.events.model import Metadata


def _remote(name: str) -> Any:
    """The API variant of a command (maestro.cli_remote_admin imports this module's parsers)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        from maestro import cli_remote_admin

        return getattr(cli_remote_admin, name)(*args, **kwargs)

    return call


def _actor() -> Metadata:
    try:
        return Metadata(actor=f"cli:{getpass.getuser()}")
    except (KeyError, OSError):  # no login name (some containers)
        return Metadata(actor="cli:unknown")


# ---------------------------------------------------------------------- config
@click.group("config")
def config_group() -> None:
    """Show and change the live configuration (applies to running servers without a restart)."""


@config_group.command("show")
@click.argument("section", required=False, type=click.Choice(sorted(SECTIONS)))
@via_api(_remote("remote_config_show"))
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_show(section: str | None, as_json: bool, **flags: Any) -> None:
    """Show SECTION (or every section); secrets only as set or not set."""
    from maestro.handlers.config.service import public_view

    settings = command_settings(**flags)

    async def go() -> list[dict[str, Any]]:
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        try:
            view = runtime.config
            assert view is not None
            names = [section] if section else [*SINGLE_SECTIONS, "databases"]
            shown = [public_view(s, view.entry(s)) for s in names if s != "databases"]
            if "databases" in names:
                shown += [public_view("databases", e, name=e.name) for e in view.entries() if e.section == "databases"]
            return shown
        finally:
            await runtime.close()

    shown = run(go)
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    for view in shown:
        title = view.get("section") or f"databases/{view['name']}"
        status = "configured" if view["configured"] else "not configured"
        click.echo(f"[{title}] {status}, version {view['version']}")
        for key, value in view.items():
            if key in ("section", "name", "configured", "version"):
                continue
            if isinstance(value, dict) and set(value) == {"set"}:
                value = "(secret, set)" if value["set"] else "(secret, not set)"
            click.echo(f"  {key} = {value if value is not None else ''}")


@config_group.command("set")
@click.argument("section", type=click.Choice(sorted(SECTIONS)))
@click.argument("assignments", nargs=-1, metavar="[NAME] KEY=VALUE...")
@click.option("--prompt", "prompted", multiple=True, metavar="FIELD", help="Read secret FIELD from a hidden prompt (or a pipe).")
@click.option("--from-file", "from_files", multiple=True, metavar="FIELD=PATH", help="Read secret FIELD from PATH.")
@click.option("--clear-secret", "clear", multiple=True, metavar="FIELD", help="Remove secret FIELD.")
@via_api(_remote("remote_config_set"))
@database_options
def config_set(
    section: str, assignments: tuple[str, ...], prompted: tuple[str, ...], from_files: tuple[str, ...],
    clear: tuple[str, ...], **flags: Any,
) -> None:
    """Change SECTION: only the keys given change. For databases, NAME comes first; a new name
    adds a database. Lists (allowed_domains) are comma-separated; an empty value unsets."""
    cls = SECTIONS[section]
    args = list(assignments)
    name = args.pop(0) if section == "databases" and args and "=" not in args[0] else None
    if section == "databases" and name is None:
        raise click.UsageError("databases: give the database NAME first")
    values: dict[str, Any] = {}
    for item in args:
        key, eq, raw = item.partition("=")
        if not eq:
            raise click.UsageError(f"{item!r}: expected KEY=VALUE")
        if key in cls.secret_fields:
            raise click.UsageError(
                f"{key} is secret: use --prompt {key} or --from-file {key}=PATH "
                "(a value on the command line shows in ps and in shell history)"
            )
        values[key] = _parse(cls.model_fields.get(key), raw)
    for field in prompted:
        _secret_field(cls, field)
        values[field] = click.prompt(f"{section} {field}", hide_input=True, show_default=False, err=True)
    for item in from_files:
        field, eq, path = item.partition("=")
        if not eq:
            raise click.UsageError(f"--from-file {item!r}: expected FIELD=PATH")
        _secret_field(cls, field)
        try:
            values[field] = Path(path).read_text().strip()
        except OSError as exc:
            raise click.UsageError(f"--from-file {field}: cannot read {path!r}: {exc.strerror}") from None
    settings = command_settings(**flags)

    async def go() -> dict[str, Any]:
        from maestro.handlers.config.service import public_view
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        try:
            service = runtime.config_service
            assert service is not None
            if section != "databases":
                entry = await service.set_section(section, values, _actor(), partial=True, clear=clear)
                return public_view(section, entry)
            current = await service.current("databases", name)
            if current is None or current.deleted:
                entry = await service.add_database(name, values, _actor())
            else:
                entry = await service.change_database(name, values, _actor(), clear=clear)  # type: ignore[arg-type]
            return public_view("databases", entry, name=name)
        finally:
            await runtime.close()

    view = run(go)
    click.echo(f"{section}{'/' + name if name else ''}: version {view['version']}, "
               f"{'configured' if view['configured'] else 'not configured yet'}")


def _secret_field(cls: Any, field: str) -> None:
    if field not in cls.secret_fields:
        raise click.UsageError(f"{field!r} is not a secret field; secret fields: {', '.join(cls.secret_fields) or 'none'}")


def _parse(info: Any, raw: str) -> Any:
    """A command-line value for a field: lists split on commas, empty unsets an optional field."""
    if info is None:
        return raw  # unknown: the service names it in its error
    if typing.get_origin(info.annotation) is list or "list[" in str(info.annotation):
        return [v.strip() for v in raw.split(",") if v.strip()]
    if raw == "" and not info.is_required() and info.default is None:
        return None
    return raw


# ---------------------------------------------------------------------- secrets
@click.group("secrets")
def secrets_group() -> None:
    """The master secret that encrypts stored credentials."""


@secrets_group.command("generate")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
def secrets_generate(path: Path) -> None:
    """Write a new master secret to PATH (mode 0600; refuses to overwrite)."""
    from maestro.adapters.secrets import SecretBox
    from maestro.handlers.config.secret_file import write_new_secret

    if not write_new_secret(path):
        raise click.UsageError(f"{path} exists; it is not overwritten (it may be the only copy of a secret)")
    click.echo(f"wrote a new master secret to {path} (key {SecretBox.from_file(path).key_id}); back it up apart from the database")


@secrets_group.command("rotate")
@click.option("--new-secret-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
              help="The new master secret (create it with `maestro secrets generate`).")
@via_api(_remote("remote_secrets"))
@database_options
def secrets_rotate(new_secret_file: Path, **flags: Any) -> None:
    """Re-encrypt every stored credential under the secret in --new-secret-file."""
    from maestro.adapters.secrets import SecretBox

    settings = command_settings(**flags)
    new_box = SecretBox.from_file(new_secret_file)

    async def go() -> Any:
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False)
        try:
            assert runtime.config_service is not None
            if runtime.config_service.box.key_id == new_box.key_id:
                raise click.UsageError("the new secret file holds the secret in use already")
            return await runtime.config_service.rotate(new_box, _actor())
        finally:
            await runtime.close()

    report = run(go)
    click.echo(f"re-encrypted {report.secrets} credential(s) in {report.streams} stream(s): key {report.old_key_id} -> {report.new_key_id}")
    click.echo(
        f"next: 1. restart every Maestro process with --secret-file {new_secret_file} (until then they cannot "
        "open the credentials); 2. destroy the old secret file and every copy and backup of it: the log keeps "
        "the old ciphertexts, which anyone with the old secret and a copy of the log could open; 3. if the old "
        "secret may have leaked, also rotate the credentials themselves (keys, passwords, tokens) at their source.",
        err=True,
    )


@secrets_group.command("reset")
@click.option("--yes", is_flag=True, help="Confirm: the credentials the lost secret sealed are gone for good.")
@via_api(_remote("remote_secrets"))
@database_options
def secrets_reset(yes: bool, **flags: Any) -> None:
    """After losing the master secret for good: record that the credentials it sealed are gone.

    They must then be entered again (`maestro config set ... --prompt FIELD`)."""
    if not yes:
        raise click.UsageError("this forgets every credential the current secret cannot open; confirm with --yes")
    settings = command_settings(**flags)

    async def go() -> list[str]:
        from maestro.runtime import open_runtime

        runtime = await open_runtime(settings, follow=False, check_secrets=False)
        try:
            assert runtime.config_service is not None
            return await runtime.config_service.clear_unreadable(_actor())
        finally:
            await runtime.close()

    cleared = run(go)
    if not cleared:
        click.echo("every stored credential opens with the current secret: nothing to reset")
        return
    click.echo(f"forgot {len(cleared)} credential(s); enter them again:")
    for name in cleared:
        click.echo(f"  {name}")

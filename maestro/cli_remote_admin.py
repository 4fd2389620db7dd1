"""``apply``, ``export``, ``token`` and ``config`` through the API, when given ``--url``/``--profile``.

The database-direct commands act with the database's trust (the bootstrap trust, docs/auth.md);
through the API they act as the token's user -- the actor of every event is that user, and the
server's rules apply (a group member applies only tables of their groups; configuration needs an
administrator). ``apply`` plans locally exactly as the direct command does (the same folder
reader and planner, against the catalog the API lists), then makes each change with one request
(create, then update with the version it planned against, then delete), so a change made by
someone else meanwhile is refused (409) rather than overwritten; running it again finishes it.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from maestro.cli_config import _parse, _secret_field
from maestro.events.catalog import TableSpec
from maestro.events.config import SECTIONS
from maestro_client import Maestro

_SPEC_FIELDS = frozenset((f.alias or name) for name, f in TableSpec.model_fields.items())
_VIEW_KEYS = ("section", "name", "configured", "version")


def catalog_rows(m: Maestro) -> list[dict[str, Any]]:
    """Every table (deleted ones too), as ``apply.plan`` and ``folder.export`` read catalog rows."""
    tables = m.tables(include_deleted="true")
    return [
        {"table_id": t["id"], "spec": {k: v for k, v in t.items() if k in _SPEC_FIELDS},
         "version": t["version"], "deleted": t["deleted"]}
        for t in tables
    ]


def remote_apply(m: Maestro, directory: Path, dry_run: bool, prune: bool, actor: str | None,
                 detailed_exitcode: bool, **_database: Any) -> None:
    from maestro.handlers.catalog import apply, folder

    if actor is not None:
        raise click.UsageError("--actor: through the API the actor is the token's user")
    specs = folder.read_folder(directory, default_project=None)
    plan = apply.plan(specs, catalog_rows(m), prune)
    for change in plan.changes:
        click.echo(change.describe())
    if plan.kept:
        click.echo(f"  ({len(plan.kept)} live table(s) not in {directory} are kept; --prune deletes them)")
    if dry_run:
        click.echo(f"dry run: {plan.summary()}")
        if detailed_exitcode and plan.has_changes:
            sys.exit(3)
        return
    for change in plan.creates:
        assert change.spec is not None
        payload = change.spec.to_payload()
        for key in ("group_id", "owner_id"):  # unnamed: the server's defaults (the caller's first group, the caller)
            if payload.get(key) is None:
                payload.pop(key, None)
        m.request("POST", "/api/v1/tables", json=payload)
    for change in plan.updates:
        assert change.spec is not None
        wanted = apply.canonical_payload(change.spec)
        m.request("PATCH", f"/api/v1/tables/{change.table_id}",
                  json={**{k: wanted[k] for k in change.fields}, "version": change.version})
    for change in plan.deletes:
        m.request("DELETE", f"/api/v1/tables/{change.table_id}")
    click.echo(f"applied through {m.url}: {plan.summary()}")


def remote_export(m: Maestro, directory: Path, **_database: Any) -> None:
    from maestro.handlers.catalog import folder

    folder.check_export_target(directory)
    click.echo(folder.export(catalog_rows(m), directory).summary())


def remote_token_create(m: Maestro, user_id: str, name: str, admin: bool, expires_in_days: int | None,
                        **_database: Any) -> None:
    if user_id != "bootstrap-admin" or admin:
        raise click.UsageError("--user/--admin need the database: through the API a token is created for "
                               "the token's own user (an administrator makes users with `maestro token create` "
                               "on the server)")
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=expires_in_days) if expires_in_days else None
    body = m.request("POST", "/api/v1/tokens",
                     json={"name": name, "expires_at": expires.isoformat() if expires else None})
    click.echo(body["token"])
    click.echo(f"token {body.get('token_id') or body.get('id')} for {body.get('user_id')}; store it now, it is not "
               "kept", err=True)


def _views(m: Maestro, section: str | None) -> list[dict[str, Any]]:
    if section == "databases":
        return m.request("GET", "/api/v1/databases")["databases"]
    if section is not None:
        return [m.request("GET", f"/api/v1/config/{section}")]
    everything = m.request("GET", "/api/v1/config")
    return [*everything["sections"], *everything["databases"]]


def remote_config_show(m: Maestro, section: str | None, as_json: bool, **_database: Any) -> None:
    shown = _views(m, section)
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    for view in shown:
        title = view.get("section") or f"databases/{view.get('name')}"
        click.echo(f"[{title}] {'configured' if view.get('configured') else 'not configured'}, "
                   f"version {view.get('version')}")
        for key, value in view.items():
            if key in _VIEW_KEYS:
                continue
            if isinstance(value, dict) and set(value) == {"set"}:
                value = "(secret, set)" if value["set"] else "(secret, not set)"
            click.echo(f"  {key} = {value if value is not None else ''}")


def remote_config_set(m: Maestro, section: str, assignments: tuple[str, ...], prompted: tuple[str, ...],
                      from_files: tuple[str, ...], clear: tuple[str, ...], **_database: Any) -> None:
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
            raise click.UsageError(f"{key} is secret: use --prompt {key} or --from-file {key}=PATH")
        values[key] = _parse(cls.model_fields.get(key), raw)
    for field in prompted:
        _secret_field(cls, field)
        values[field] = click.prompt(f"{section} {field}", hide_input=True, show_default=False, err=True)
    for item in from_files:
        field, _, path = item.partition("=")
        _secret_field(cls, field)
        values[field] = Path(path).read_text().strip()
    if section == "databases":
        known = {d.get("name") for d in m.request("GET", "/api/v1/databases")["databases"]}
        if name in known:
            view = m.request("PATCH", f"/api/v1/databases/{name}", json={**values, "clear_secrets": list(clear)})
        else:
            view = m.request("POST", "/api/v1/databases", json={"name": name, **values})
    else:
        current = m.request("GET", f"/api/v1/config/{section}")
        body = {k: v for k, v in current.items() if k not in _VIEW_KEYS}
        view = m.request("PUT", f"/api/v1/config/{section}", json={
            **body, **values, "version": current.get("version"), "clear_secrets": list(clear)})
    click.echo(f"{section}{'/' + name if name else ''}: version {view.get('version')}, "
               f"{'configured' if view.get('configured') else 'not configured yet'}")


def remote_secrets(m: Maestro, *_args: Any, **_kwargs: Any) -> None:
    raise click.UsageError(
        "the master secret is a file of the server's, never sent over the network: run `maestro secrets "
        "rotate|reset` where the server runs, with its database settings")

"""Options shared by the ``maestro`` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr


def database_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--database-url",
        default=None,
        help="PostgreSQL >= 13 DSN (env MAESTRO_DATABASE_URL). None: embedded PostgreSQL.",
    )(fn)
    fn = click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Where embedded data lives (env MAESTRO_DATA_DIR).",
    )(fn)
    fn = click.option(
        "--secret-file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Master secret that encrypts stored credentials (env MAESTRO_SECRET_FILE). "
        "None in development: <data dir>/secret, generated once.",
    )(fn)
    fn = click.option(
        "--secret",
        default=None,
        # Wrapped at once: Settings.with_overrides does not validate, and a bare str would print.
        callback=lambda _ctx, _param, value: SecretStr(value) if value is not None else None,
        help="The master secret itself: development only (visible in ps and shell history).",
    )(fn)
    return fn

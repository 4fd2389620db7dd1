"""What the ``maestro`` commands share: database options, settings and running a coroutine."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import SecretStr

from maestro.errors import MaestroError
from maestro.logs import configure_logging
from maestro.settings import Settings, load_settings

T = TypeVar("T")


def command_settings(**overrides: Any) -> Settings:
    """Settings from flags over the environment, with logging configured: once per command."""
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; our errors end the command with their message and exit code 2."""
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except MaestroError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


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

"""Options shared by the ``maestro`` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


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
    return fn

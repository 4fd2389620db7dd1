"""Which Maestro server the command line talks to, and how its errors end a command.

A server is ``--url`` and ``--token``, or a *profile* saved by ``maestro login`` in
``profiles.toml`` under the user's configuration directory (``$XDG_CONFIG_HOME/maestro``,
by default ``~/.config/maestro``), mode 0600 since it holds tokens::

    default = "prod"
    [profiles.prod]
    url = "https://maestro.example.com"
    token = "mae_..."

``--url`` without ``--token`` takes the token of a profile with that URL. Errors end the command
with one line naming the cause, never a traceback: exit 2 for bad input (an unknown table, a
wrong or expired token, a refusal, an invalid request), 1 for failures (a server that is down or
failing, a run that failed, a wait that timed out).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import platformdirs

from maestro_client import ApiError, Maestro, MaestroClientError, RunFailed

EXIT_FAILED, EXIT_INVALID = 1, 2


def profiles_path() -> Path:
    return Path(platformdirs.user_config_dir("maestro", appauthor=False)) / "profiles.toml"


def read_profiles(path: Path | None = None) -> dict[str, Any]:
    path = path or profiles_path()
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise click.UsageError(f"{path}: cannot read the profiles: {exc}") from None


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string for everything we store


def write_profile(name: str, url: str, token: str, *, make_default: bool, path: Path | None = None) -> Path:
    path = path or profiles_path()
    data = read_profiles(path)
    profiles = dict(data.get("profiles") or {})
    profiles[name] = {"url": url, "token": token}
    default = name if make_default or not data.get("default") else data["default"]
    lines = [f"default = {_toml_string(default)}", ""]
    for key, entry in sorted(profiles.items()):
        lines += [f"[profiles.{_toml_string(key)}]", f"url = {_toml_string(entry['url'])}",
                  f"token = {_toml_string(entry['token'])}", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Server:
    url: str
    token: str | None
    profile: str | None


def resolve(url: str | None, token: str | None, profile: str | None) -> Server:
    data = read_profiles()
    profiles = data.get("profiles") or {}
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none (save one with `maestro login`)"
            raise click.UsageError(f"no profile {profile!r} in {profiles_path()}; profiles: {known}")
        entry = profiles[profile]
        return Server((url or entry["url"]).rstrip("/"), token or entry.get("token"), profile)
    if url is not None:
        same = [n for n, e in profiles.items() if e.get("url", "").rstrip("/") == url.rstrip("/")]
        return Server(url.rstrip("/"), token or (profiles[same[0]].get("token") if same else None), None)
    default = data.get("default")
    if default in profiles:
        entry = profiles[default]
        return Server(entry["url"].rstrip("/"), token or entry.get("token"), default)
    raise click.UsageError("which server? give --url (and --token), or save a profile with `maestro login`")


def remote_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--profile", default=None, help="A server saved with `maestro login`.")(fn)
    fn = click.option("--token", default=None, help="API token (default: the profile's).")(fn)
    fn = click.option("--url", default=None, help="The Maestro server (default: the default profile).")(fn)
    return fn


def connect(url: str | None, token: str | None, profile: str | None) -> Maestro:
    server = resolve(url, token, profile)
    return Maestro(server.url, server.token)


def exit_code(exc: MaestroClientError) -> int:
    if isinstance(exc, ApiError):
        return EXIT_FAILED if exc.status >= 500 or exc.status == 429 else EXIT_INVALID
    return EXIT_FAILED


def _line(exc: MaestroClientError) -> str:
    if isinstance(exc, ApiError):
        hint = ""
        if exc.status == 401:
            hint = " (check --token or the profile: the token may be wrong, expired or revoked)"
        return f"error: {exc.message}{hint}"
    if isinstance(exc, RunFailed):
        return f"failed: {exc.message}"
    return f"error: {exc.message}"


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Run a remote command: client errors become one line on stderr and the exit code."""
    try:
        yield
    except MaestroClientError as exc:
        click.echo(_line(exc), err=True)
        sys.exit(exit_code(exc))


def remote_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command that talks to a server: its connection options, and errors reported."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with reported():
            return fn(*args, **kwargs)

    return remote_options(wrapper)


def via_api(remote: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For a database-direct command: with ``--url`` or ``--profile`` it runs ``remote`` instead
    (through the API, as the token's user); without them, as before, on the database."""

    def decorate(local: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(local)
        def wrapper(*args: Any, url: str | None, token: str | None, profile: str | None, **kwargs: Any) -> Any:
            if url is None and profile is None:
                if token is not None:
                    raise click.UsageError("--token goes with --url or --profile")
                return local(*args, **kwargs)
            with reported(), connect(url, token, profile) as m:
                return remote(m, *args, **kwargs)

        return remote_options(wrapper)

    return decorate

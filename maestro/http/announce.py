"""What ``maestro serve`` says once it is up: where it listens, where the data lives, how to log in.

One log record: readable lines for a person at a terminal, the same facts as fields in JSON.
The database URL is shown without its password; the bootstrap token is never shown, only the
file that holds it.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from maestro.http.keys import RUNTIME, SETTINGS

log = logging.getLogger("maestro")


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc))


def facts(app: web.Application) -> dict[str, Any]:
    settings = app[SETTINGS]
    runtime = app[RUNTIME]
    database = (f"embedded PostgreSQL in {settings.data_dir / 'postgres'}" if settings.embedded
                else _without_password(settings.database_url or ""))
    bigquery = (f"Google Cloud project {settings.google_project}" if settings.google_project
                else f"the local stack (BigQuery and Cloud Storage) in {settings.data_dir / 'localstack'}"
                if settings.local_stack else "not started (no project, local stack off)")
    token_file = settings.data_dir / "bootstrap-token"
    oauth = runtime.config.oauth_client() if runtime.config is not None else None
    login = []
    if oauth is not None or settings.oidc_client_id:
        login.append(f"people: {settings.base_url}/login")
    if token_file.exists():
        login.append(f"maestro login --url {settings.base_url} --token \"$(cat {token_file})\"  (the bootstrap "
                     "administrator; make personal tokens, then revoke it)")
    else:
        login.append("API tokens: POST /api/v1/tokens, or `maestro token create --user NAME` on this machine")
    return {"listen": settings.base_url, "database": database, "data_dir": str(settings.data_dir),
            "bigquery": bigquery, "login": login}


async def announce(app: web.Application) -> None:
    found = facts(app)
    text = "\n".join([
        f"Maestro is listening on {found['listen']}",
        f"  database: {found['database']}",
        f"  data:     {found['data_dir']}",
        f"  BigQuery: {found['bigquery']}",
        *(f"  log in:   {how}" for how in found["login"]),
    ])
    log.info(text, extra={**found, "banner": True})

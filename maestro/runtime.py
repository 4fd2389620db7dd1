"""Wiring: open the database (external or embedded), migrate, build the store and projections.

The HTTP app, the CLI and the tests all start Maestro through :func:`open_runtime`, so there is
one way in and one way out.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maestro.adapters import embedded_pg, postgres
from maestro.events.store import EventStore
from maestro.health import Health
from maestro.handlers.people.audit import AuditLog
from maestro.handlers.catalog.import_check import ImportCheck
from maestro.handlers.catalog.service import CatalogService
from maestro.handlers.config.service import ConfigService, open_config
from maestro.handlers.config.view import ConfigView
from maestro.handlers.runs.service import RunService
from maestro.handlers.people.login import LoginService, OAuthClientConfig, oauth_from_settings
from maestro.handlers.people.sessions import SessionService
from maestro.handlers.people.tokens import TokenService
from maestro.handlers.people.users import UserService
from maestro.projections import Projection, ProjectionRunner
from maestro.projections.registry import all_projections
from maestro.settings import Settings

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "maestro"


@dataclass
class Runtime:
    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    store: EventStore
    projections: ProjectionRunner
    catalog: CatalogService
    tokens: TokenService
    runs: RunService
    embedded: embedded_pg.EmbeddedPostgres | None = None
    started: dict[str, Any] = field(default_factory=dict)
    bigquery: Any = None  # maestro.adapters.bigquery.BigQueryJobs once services run
    services: Any = None  # maestro.services.Services
    # The live configuration (credentials, pricing, OAuth...): read it at the moment of use,
    # e.g. runtime.config.get("pricing"); it follows changes without a restart.
    config: ConfigView | None = None
    config_service: ConfigService | None = None
    # What each long-lived loop of this process is doing (/healthz, /metrics).
    health: Health = field(default_factory=Health)

    # People: set by open_runtime (after construction, so the positional fields above stay put).
    users: UserService = field(init=False)
    sessions: SessionService = field(init=False)
    audit: AuditLog = field(init=False)
    login: LoginService = field(init=False)

    async def close(self) -> None:
        if self.services is not None:
            await self.services.close()
        await self.login.close()
        await self.audit.close()  # before the pool: counted refusals are appended now
        if self.config is not None:
            await self.config.stop()
        await self.projections.stop()
        await self.store.close()
        await self.pool.close()
        if self.embedded is not None:
            self.embedded.stop()


async def resolve_database(settings: Settings) -> tuple[str, embedded_pg.EmbeddedPostgres | None]:
    """The DSN to use: the configured one, or an embedded server's (started, database created)."""
    if settings.database_url is not None:
        return settings.database_url, None
    server = await embedded_pg.start_embedded(settings.data_dir / "postgres")
    await postgres.ensure_database(server.dsn, EMBEDDED_DATABASE)
    return server.database_dsn(EMBEDDED_DATABASE), server


async def open_runtime(
    settings: Settings,
    *,
    projections: list[Projection] | None = None,
    follow: bool = True,
    check_secrets: bool = True,
) -> Runtime:
    t0 = time.perf_counter()
    dsn, server = await resolve_database(settings)
    try:
        t1 = time.perf_counter()
        applied = await postgres.migrate_dsn(dsn)
        t2 = time.perf_counter()
        pool = await postgres.create_pool(
            dsn, min_size=settings.pool_min_size, max_size=settings.pool_max_size
        )
        store = EventStore(pool, listen_dsn=dsn, poll_interval=settings.poll_interval)
        health = Health()
        runner = ProjectionRunner(
            store, projections if projections is not None else all_projections(), health=health
        )
        await runner.prepare()
        try:
            config, config_service = await open_config(
                settings, store, follow=follow, check=check_secrets, health=health
            )
        except BaseException:
            await store.close()
            await pool.close()
            raise
        catalog = CatalogService(store, settings.project)
        catalog.import_check = ImportCheck(config)
        await catalog.refresh()
        users = UserService(store)
        tokens = TokenService(store, users)
        if follow:
            runner.start()
    except BaseException:
        if server is not None:
            server.stop()
        raise
    runs = RunService(store, catalog, settings.google_project or settings.project)
    runtime = Runtime(settings, dsn, pool, store, runner, catalog, tokens, runs, server, health=health)
    runtime.config, runtime.config_service = config, config_service
    _wire_people(runtime, users)
    runtime.started = {
        "database_ready_s": round(t1 - t0, 3),
        "migrated_s": round(t2 - t1, 3),
        "migrations_applied": applied,
        "embedded": server is not None,
    }
    log.info("maestro runtime open", extra=runtime.started)
    return runtime


def _wire_people(runtime: Runtime, users: UserService) -> None:
    settings = runtime.settings
    runtime.users = users
    runtime.sessions = SessionService(runtime.store, dt.timedelta(seconds=settings.session_lifetime))
    runtime.audit = AuditLog(runtime.store)
    runtime.login = LoginService(
        runtime.store, users, runtime.sessions, runtime.audit,
        source=_oauth_source(runtime), public_url=settings.base_url,
    )


def _oauth_source(runtime: Runtime) -> Callable[[], OAuthClientConfig | None]:
    """The OAuth client: from the live configuration when it holds one, else from the settings."""
    from_settings = oauth_from_settings(runtime.settings)

    def source() -> OAuthClientConfig | None:
        configured = runtime.config.oauth_client() if runtime.config is not None else None
        return configured or from_settings()  # same fields: issuer, client_id, client_secret, ...

    return source

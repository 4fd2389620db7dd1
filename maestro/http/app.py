"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from maestro.http import catalog, config, datasets, deliveries, history, imports, loads, ops, runs
from maestro.http import access, costs, git, legacy, login, people, slack, table_info, ui
from maestro.http.auth import LIMITER, TRUSTED_PROXIES, auth_middleware
from maestro.http.errors import error_middleware
from maestro.http.forwarded import parse_networks
from maestro.http.keys import METRICS, RUNTIME, SETTINGS
from maestro.http.metrics import Metrics
from maestro.http.ratelimit import FailureLimiter
from maestro.http.run_events import STREAM_SLOTS, StreamSlots
from maestro.http.ui.errors import ui_error_middleware
from maestro.http.validation import path_middleware
from maestro.runtime import Runtime, open_runtime
from maestro.settings import Settings


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> web.Application:
    """Build the application. With ``runtime`` given (tests), the caller owns its lifetime."""
    app = web.Application(middlewares=[error_middleware, ui_error_middleware, path_middleware, legacy.legacy_middleware, auth_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics(CollectorRegistry(auto_describe=True))
    app[LIMITER] = FailureLimiter(settings.auth_failure_burst, settings.auth_failures_per_minute)
    app[STREAM_SLOTS] = StreamSlots(settings.sse_streams_per_user)
    app[TRUSTED_PROXIES] = parse_networks(settings.trusted_proxies)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime if runtime is not None else await open_runtime(settings)
        if owned:
            await rt.tokens.bootstrap(settings.data_dir)
            if settings.google_project is not None or settings.local_stack:
                from maestro.services import start_services

                await start_services(rt)
        rt.store.on_append(app[METRICS].on_append)
        app[RUNTIME] = rt
        try:
            yield
        finally:
            if owned:
                await rt.close()

    app.cleanup_ctx.append(runtime_ctx)
    ops.add_routes(app)
    history.add_routes(app)
    catalog.add_routes(app)
    datasets.add_routes(app)
    runs.add_routes(app)
    costs.add_routes(app)
    loads.add_routes(app)
    imports.add_routes(app)
    login.add_routes(app)
    people.add_routes(app)
    access.add_routes(app)
    config.add_routes(app)
    slack.add_routes(app)
    deliveries.add_routes(app)
    ui.add_routes(app)
    table_info.add_routes(app)
    legacy.add_routes(app)
    git.add_routes(app)
    return app

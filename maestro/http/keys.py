"""Typed keys for what the aiohttp application carries."""

from __future__ import annotations

from aiohttp import web

from maestro.http.metrics import Metrics
from maestro.runtime import Runtime
from maestro.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)

from maestro.handlers.people.principal import Principal  # noqa: E402

PRINCIPAL = web.RequestKey("principal", Principal)

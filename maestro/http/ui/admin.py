"""Administration pages (the API's ``admin`` rule) and the API tokens page (``read``: your own).

Each page shows what its API list route answers, called in-process as the caller
(``maestro.http.ui.api``); every change is a form or button calling the API. Configuration
secrets are write-only: the API shows only whether each is set, and so do these pages.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from maestro.events.catalog import FrequencySpec
from maestro.events.config import SECTIONS, SINGLE_SECTIONS
from maestro.events.model import now
from maestro.http.routing import Route, routes
from maestro.http.ui.api import api_get
from maestro.http.ui.render import page, who
from maestro.scheduling import Schedule, next_slot_after

NEXT_SLOTS = 3
_META = {"section", "name", "configured", "version", "updated_at", "updated_by"}


async def users_page(request: web.Request) -> web.Response:
    users = (await api_get(request, "/api/v1/users"))["users"]
    groups = (await api_get(request, "/api/v1/groups"))["groups"]
    names = {g["id"]: g["name"] for g in groups}
    return page(request, "admin_users.html", title="Users", users=users, groups=groups, group_names=names,
                section="users")


async def groups_page(request: web.Request) -> web.Response:
    groups = (await api_get(request, "/api/v1/groups"))["groups"]
    return page(request, "admin_groups.html", title="Groups", groups=groups, section="groups")


def next_slots(spec: dict[str, Any], count: int = NEXT_SLOTS, after: dt.datetime | None = None) -> list[dt.datetime]:
    """The frequency's next start times (UTC); none while it is inactive."""
    if not spec.get("active", True):
        return []
    schedule = Schedule.from_spec(FrequencySpec.model_validate({k: v for k, v in spec.items() if k in FrequencySpec.model_fields}))
    slots, at = [], after or now()
    for _ in range(count):
        at = next_slot_after(schedule, at)
        slots.append(at)
    return slots


async def frequencies_page(request: web.Request) -> web.Response:
    frequencies = (await api_get(request, "/api/v1/frequencies"))["frequencies"]
    for f in frequencies:
        f["next"] = next_slots(f)
    return page(request, "admin_frequencies.html", title="Frequencies", frequencies=frequencies, section="frequencies")


async def datasets_page(request: web.Request) -> web.Response:
    datasets = (await api_get(request, "/api/v1/datasets"))["datasets"]
    groups = (await api_get(request, "/api/v1/groups"))["groups"]
    return page(request, "admin_datasets.html", title="Datasets", datasets=datasets,
                groups=[(g["id"], g["name"]) for g in groups], group_names={g["id"]: g["name"] for g in groups},
                section="datasets")


def _form_of(section: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A section's settings (shown, editable as JSON) and its secrets (write-only fields)."""
    secret_fields = list(SECTIONS[section].secret_fields)
    settings = {k: v for k, v in entry.items() if k not in _META and k not in secret_fields}
    return {"entry": entry, "settings": settings, "secrets": [(f, entry.get(f, {}).get("set", False)) for f in secret_fields]}


async def databases_page(request: web.Request) -> web.Response:
    databases = (await api_get(request, "/api/v1/databases"))["databases"]
    return page(request, "admin_databases.html", title="Databases", databases=[_form_of("databases", d) for d in databases],
                blank=_form_of("databases", {}), section="databases")


async def config_page(request: web.Request) -> web.Response:
    config = await api_get(request, "/api/v1/config")
    sections = [_form_of(s["section"], s) for s in config["sections"]]
    return page(request, "admin_config.html", title="Configuration", sections=sections, section="config",
                known=SINGLE_SECTIONS)


async def tokens_page(request: web.Request) -> web.Response:
    everyone = request.query.get("all") == "true" and bool(who(request) and who(request).admin)  # type: ignore[union-attr]
    tokens = (await api_get(request, "/api/v1/tokens", {"all": "true"} if everyone else None))["tokens"]
    return page(request, "tokens.html", title="API tokens", tokens=tokens, everyone=everyone, section="tokens")


ROUTES = routes(
    Route("GET", "/admin/users", users_page, "Page: users", rule="admin", tag="ui", content_type="text/html"),
    Route("GET", "/admin/groups", groups_page, "Page: groups", rule="admin", tag="ui", content_type="text/html"),
    Route("GET", "/admin/frequencies", frequencies_page, "Page: frequencies", rule="admin", tag="ui", content_type="text/html"),
    Route("GET", "/admin/datasets", datasets_page, "Page: datasets", rule="admin", tag="ui", content_type="text/html"),
    Route("GET", "/admin/databases", databases_page, "Page: source and target databases", rule="admin", tag="ui", content_type="text/html"),
    Route("GET", "/admin/config", config_page, "Page: configuration", rule="admin", tag="ui", content_type="text/html"),
    Route("GET", "/tokens", tokens_page, "Page: API tokens", rule="read", tag="ui", content_type="text/html"),
)

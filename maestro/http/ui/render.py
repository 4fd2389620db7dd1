"""Rendering pages: one Jinja2 environment (autoescaped), the layout's context, and formatting.

Templates live beside this module (``templates/``); every page extends ``base.html``. Values are
escaped by default; nothing from the database is marked safe except SVG this package draws itself
(``maestro.http.ui.svg``, which escapes every label it writes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from maestro.handlers.people.principal import Principal
from maestro.http.keys import PRINCIPAL, RUNTIME

TIB = 1024**4


def _bytes(n: int | None) -> str:
    """Bytes for people.

    >>> [_bytes(v) for v in (None, 0, 1536, 5 * 1024**3)]
    ['-', '0 B', '1.5 KiB', '5.0 GiB']
    """
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(value: dt.datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _static_versions() -> dict[str, str]:
    """Each static file's content hash, put in its URL so browsers may cache it for good."""
    folder = resources.files("maestro.http.ui") / "static"
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12] for f in folder.iterdir() if f.is_file()}


STATIC_VERSIONS = _static_versions()

ENV = Environment(
    loader=PackageLoader("maestro.http.ui", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt variable fails the page test, not the user silently
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(bytes=_bytes, when=_when, usd=_usd, json=_json)
ENV.globals.update(
    duration=_duration,
    static=lambda name: f"/ui/static/{name}?v={STATIC_VERSIONS.get(name, '0')}",
    urlencode=lambda params: urlencode({k: v for k, v in params.items() if v not in (None, "", False)}),
)


def who(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


def page(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """The page as HTML. Never cached: it shows the caller's own view of live state."""
    principal = who(request)
    runtime = request.app.get(RUNTIME)
    body = ENV.get_template(template).render(
        request=request, me=principal, path=request.path,
        admin=bool(principal and principal.admin),
        user_name=principal.user_id if principal else None,
        local_mode=runtime is not None and runtime.login.source() is None,
        **context,
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", **SECURITY_HEADERS})


# Scripts only from our origin (no inline script, no eval), nothing framed, no referrer leaks.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class Pager:
    """Offset pagination of a list page: what the links to the previous and next page carry."""

    def __init__(self, request: web.Request, total: int, offset: int, limit: int, *,
                 param: str = "offset", anchor: str = "") -> None:
        self.total, self.offset, self.limit = total, offset, limit
        self._param, self._anchor = param, anchor
        self._query = {k: v for k, v in request.query.items() if k != param}

    def link(self, offset: int) -> str:
        return "?" + urlencode({**self._query, self._param: offset}) + self._anchor

    @property
    def previous(self) -> str | None:
        return self.link(max(0, self.offset - self.limit)) if self.offset > 0 else None

    @property
    def next(self) -> str | None:
        return self.link(self.offset + self.limit) if self.offset + self.limit < self.total else None

    @property
    def shown(self) -> str:
        if not self.total:
            return "none"
        return f"{self.offset + 1}–{min(self.total, self.offset + self.limit)} of {self.total:,}"

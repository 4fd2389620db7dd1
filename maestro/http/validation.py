"""Request parsing with pydantic: bad input becomes a 422 naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from maestro.validation import validated, validated_json

M = TypeVar("M", bound=BaseModel)


def parse_query(model: type[M], request: web.Request, *, multi: tuple[str, ...] = ()) -> M:
    """Validate the query string; parameters named in ``multi`` may repeat or be comma-separated."""
    data: dict[str, Any] = {}
    for key in request.query.keys():
        if key in data:
            continue
        if key in multi:
            values = [v for raw in request.query.getall(key) for v in raw.split(",") if v]
            data[key] = values
        else:
            data[key] = request.query[key]
    return validated(model, data)


async def parse_body(model: type[M], request: web.Request) -> M:
    return validated_json(model, await request.read() or b"{}")

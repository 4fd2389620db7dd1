"""Request parsing with pydantic: bad input becomes a 422 naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel

from maestro.errors import ValidationFailed
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


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``).

    The parser's excerpt is not quoted back: a body may carry a secret.
    """
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise ValidationFailed("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object")
    return body


def pop_expected_version(body: dict[str, Any]) -> int | None:
    """Take the optional ``version`` (the version the client read) out of a body."""
    version = body.pop("version", None)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ValidationFailed("version: must be an integer (the version you read)")
    return version


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response serialised with orjson (datetimes, dataclasses and large lists fast)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def parse_body(model: type[M], request: web.Request) -> M:
    return validated_json(model, await request.read() or b"{}")

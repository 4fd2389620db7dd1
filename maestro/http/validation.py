"""Request parsing with pydantic: bad input becomes a 422 naming the field.

What enters through a path, a query string or a body is also checked for what PostgreSQL cannot
store, before it reaches a query: an integer beyond the signed 64-bit range (400
``integer_out_of_range``; Python and pydantic take integers of any size, ``bigint`` does not) and
a string holding NUL (422). Both used to reach the driver and end as a 500.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from maestro.errors import IntegerOutOfRange, ValidationFailed
from maestro.validation import validated, validated_json

M = TypeVar("M", bound=BaseModel)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
VERSION_MAX = 2**31 - 1  # stream versions are PostgreSQL integers: a larger one is no version


def check_storable(value: Any, where: str = "(body)") -> None:
    """Refuse what PostgreSQL cannot take: an integer beyond int64 or a string with a NUL.

    Nested dicts (their keys too) and lists are walked; ``where`` names the field in the error.
    """
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            message = f"must be between {INT64_MIN} and {INT64_MAX}"
            raise IntegerOutOfRange(f"{where}: {message}", problems=[{"field": where, "message": message}])
    elif isinstance(value, str):
        if "\x00" in value:
            message = "must not contain the NUL character (\\u0000)"
            raise ValidationFailed(f"{where}: {message}", problems=[{"field": where, "message": message}])
    elif isinstance(value, dict):
        for key, item in value.items():
            field = str(key) if where == "(body)" else f"{where}.{key}"
            check_storable(key, field)
            check_storable(item, field)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_storable(item, f"{where}.{index}")


def _checked(model: M) -> M:
    check_storable(model.model_dump(by_alias=True))
    return model


@web.middleware
async def path_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Path parameters reach SQL (the write rule reads the table) before any handler runs."""
    for name, value in request.match_info.items():
        check_storable(value, name)
    return await handler(request)


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
    check_storable(data)
    _int64_query(model, data)
    return _checked(validated(model, data))


def _int64_query(model: type[BaseModel], data: dict[str, Any]) -> None:
    """An integer parameter given beyond int64 is a 400 whatever narrower bound the field declares."""
    for name, info in model.model_fields.items():
        raw = data.get(info.alias or name)
        annotation = info.annotation
        if isinstance(raw, str) and (annotation is int or int in get_args(annotation)):
            digits = raw.strip().removeprefix("-").removeprefix("+")
            if digits.isascii() and digits.isdigit() and len(digits) > 18:
                check_storable(int(raw), info.alias or name)


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
    check_storable(body)
    return body


def pop_expected_version(body: dict[str, Any]) -> int | None:
    """Take the optional ``version`` (the version the client read) out of a body."""
    version = body.pop("version", None)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ValidationFailed("version: must be an integer (the version you read)")
    if version is not None and not 0 <= version <= VERSION_MAX:
        raise ValidationFailed(f"version: must be between 0 and {VERSION_MAX} (the version you read)")
    return version


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response serialised with orjson (datetimes, dataclasses and large lists fast)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def parse_body(model: type[M], request: web.Request) -> M:
    return _checked(validated_json(model, await request.read() or b"{}"))

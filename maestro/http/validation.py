"""Request parsing with pydantic: bad input becomes a 422 naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from maestro.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)


def describe(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        problems.append({"field": field, "message": err["msg"]})
    message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return message, problems


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
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, problems = describe(exc)
        raise ValidationFailed(message, problems=problems) from exc


async def parse_body(model: type[M], request: web.Request) -> M:
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        message, problems = describe(exc)
        raise ValidationFailed(message, problems=problems) from exc

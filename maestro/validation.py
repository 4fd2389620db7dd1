"""Pydantic validation with our error: bad input becomes a ValidationFailed naming each field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from maestro.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)


def describe(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """A one-line message and a list of ``{"field", "message"}`` problems."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(body)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append({"field": field, "message": message})
    return "; ".join(f"{p['field']}: {p['message']}" for p in problems), problems


def validated(model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        message, problems = describe(exc)
        raise ValidationFailed(message, problems=problems) from exc


def validated_json(model: type[M], raw: bytes | str) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        message, problems = describe(exc)
        raise ValidationFailed(message, problems=problems) from exc

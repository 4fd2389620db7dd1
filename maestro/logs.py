"""Structured logs: one JSON object per line on stderr (or plain text for humans).

Every line passes through :func:`redact_line` last: code must never log a credential, and this
catches the ones that slip through anyway (an exception message quoting a connection string, a
traceback of a validation error). The live configuration registers the secrets in use with
:func:`add_redaction_source`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable

import orjson
from pythonjsonlogger.json import JsonFormatter

from maestro.adapters.secrets import redact

RedactionSource = Callable[[], Iterable[str]]
_SOURCES: list[RedactionSource] = []


def add_redaction_source(source: RedactionSource) -> None:
    """Mask whatever ``source()`` returns (the plaintext secrets in use) in every log line."""
    _SOURCES.append(source)


def remove_redaction_source(source: RedactionSource) -> None:
    if source in _SOURCES:
        _SOURCES.remove(source)


def redact_line(text: str) -> str:
    secrets: set[str] = set()
    for source in _SOURCES:
        secrets.update(source())
    if not secrets:
        return text
    # A JSON log line holds a secret with quotes, backslashes and newlines escaped: mask that too.
    escaped = {orjson.dumps(s).decode()[1:-1] for s in secrets}
    return redact(text, secrets | escaped)


class _RedactingJson(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_line(super().format(record))


class _RedactingText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_line(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            _RedactingJson(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(_RedactingText("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per request; keep it at the chosen level too.
    logging.getLogger("aiohttp.access").setLevel(level)

"""Structured logs: one JSON object per line on stderr, or readable text for people.

``log_format`` ``auto`` (the default) writes text when stderr is a terminal -- someone is
watching -- and JSON otherwise (a service manager, a container, a file: something will parse
it); ``json`` and ``text`` force one. Text lines are ``time level logger: message`` followed by
the record's structured fields as ``key=value``, so nothing JSON shows is lost.

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


# What every LogRecord has; anything else on a record came in ``extra`` (structured fields).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _value(value: object) -> str:
    text = str(value)
    return orjson.dumps(text).decode() if not text or any(c in text for c in ' "=\n') else text


class _RedactingText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if not getattr(record, "banner", False):  # a banner's fields are already in its text
            fields = [f"{k}={_value(v)}" for k, v in vars(record).items() if k not in _STANDARD]
            if fields:
                head, newline, rest = line.partition("\n")  # a traceback stays below the fields
                line = f"{head} {' '.join(fields)}{newline}{rest}"
        return redact_line(line)


def resolve_format(fmt: str, stream: object = None) -> str:
    """``auto``: text for a terminal, JSON for anything else."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if resolve_format(fmt, sys.stderr) == "json":
        handler.setFormatter(
            _RedactingJson(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(_RedactingText("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per request; keep it at the chosen level too.
    logging.getLogger("aiohttp.access").setLevel(level)

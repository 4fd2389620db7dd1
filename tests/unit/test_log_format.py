"""Logs for people: text on a terminal, JSON otherwise; text keeps the structured fields."""

from __future__ import annotations

import io
import logging
import os

from maestro.logs import _RedactingText, resolve_format


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    primary, secondary = os.openpty()
    try:
        with open(secondary, "w", closefd=False) as terminal:
            assert resolve_format("auto", terminal) == "text"
    finally:
        os.close(primary)
        os.close(secondary)
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", None) == "json" and resolve_format("text", io.StringIO()) == "text"


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("maestro.runner", logging.WARNING, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_text_lines_carry_the_fields_json_would() -> None:
    formatter = _RedactingText("%(levelname)s %(name)s: %(message)s")
    line = formatter.format(_record("job failed", job_id="maestro_query_1", error="Syntax error at [1:8]"))
    assert line == 'WARNING maestro.runner: job failed job_id=maestro_query_1 error="Syntax error at [1:8]"'
    banner = formatter.format(_record("Maestro is listening on x\n  data: y", listen="x", banner=True))
    assert banner == "WARNING maestro.runner: Maestro is listening on x\n  data: y"

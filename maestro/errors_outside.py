"""Errors of the outside world Maestro delivers to: Slack, Google Sheets, database exports. Part
of the one error tree (:mod:`maestro.errors`), kept apart so that module stays one sitting long."""

from __future__ import annotations

from typing import Any

from maestro.errors import ConfigurationError, MaestroError


class ExportFailed(MaestroError):
    """Writing a table into a target database failed; the target's previous table is intact."""

    code = "export_failed"
    status = 502

    def __init__(self, reason: str, message: str, *, retryable: bool, column: str | None = None) -> None:
        self.reason = reason  # stable: target_unavailable, bad_value, limit_exceeded, ... (docs/db-export.md)
        self.retryable = retryable  # True: the same export may succeed later (a dropped connection)
        self.column = column
        details: dict[str, Any] = {"reason": reason, "retryable": retryable}
        if column is not None:
            details["column"] = column
        super().__init__(message, **details)


class SheetsError(MaestroError):
    """Google Sheets (or Drive, sharing the spreadsheet) refused or failed a request."""

    code = "sheets_error"
    status = 502

    def __init__(self, reason: str, message: str, *, retryable: bool, spreadsheet_id: str | None = None) -> None:
        self.reason = reason
        self.retryable = retryable  # True: the same export may succeed later (quota, outage)
        self.spreadsheet_id = spreadsheet_id  # created by this export before it failed: record it
        super().__init__(f"Google Sheets: {message} ({reason})", reason=reason, retryable=retryable,
                         **({"spreadsheet_id": spreadsheet_id} if spreadsheet_id else {}))


class SheetsLimitExceeded(SheetsError):
    """The result does not fit Google Sheets' documented limits; nothing was written."""

    code = "sheets_limit_exceeded"
    status = 422

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(limit, message, retryable=False)


class SlackError(MaestroError):
    """Slack refused or failed a request."""

    code = "slack_error"
    status = 502

    def __init__(self, reason: str, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        self.reason = reason  # Slack's own error string (channel_not_found, invalid_auth, ratelimited, ...)
        self.retryable = retryable  # True: the same message may go through later
        self.retry_after = retry_after  # seconds Slack asked us to wait (429 Retry-After), if it said
        super().__init__(f"Slack: {message} ({reason})", reason=reason, retryable=retryable, retry_after=retry_after)


class SlackNotConfigured(ConfigurationError):
    """Slack is not configured: set a bot token or an incoming webhook URL (PUT /api/v1/config/slack)."""

    code = "slack_not_configured"
    status = 409  # configure it first: a state of this service, not a failure of it

"""One error tree for Maestro.

Every error our code raises on purpose derives from :class:`MaestroError`. Each class carries a
stable ``code`` (what API clients match on), an HTTP ``status`` the web layer uses, and a one-line
docstring that is the default human message. Drivers' errors are translated into these in exactly
one place each (``raise ... from exc``).
"""

from __future__ import annotations

from typing import Any


class MaestroError(Exception):
    """Something went wrong in Maestro."""

    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ValidationFailed(MaestroError):
    """The request does not validate."""

    code = "validation_failed"
    status = 422


class IntegerOutOfRange(ValidationFailed):
    """An integer in the request is outside the signed 64-bit range every stored integer has."""

    code = "integer_out_of_range"
    status = 400


class NotFound(MaestroError):
    """The requested object does not exist."""

    code = "not_found"
    status = 404


class Conflict(MaestroError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class ConcurrencyConflict(Conflict):
    """The stream was changed by someone else: its version is not the one expected."""

    code = "concurrency_conflict"

    def __init__(self, stream_id: str, expected: int | str, actual: int | None) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual if actual is not None else 'none (no stream)'}, "
            f"expected {expected}",
            stream_id=stream_id,
            expected=expected,
            actual=actual,
        )


class UnknownEventType(MaestroError):
    """The log holds an event type this version of Maestro does not know."""

    code = "unknown_event_type"

    def __init__(self, type_name: str, position: int | None = None) -> None:
        self.type_name = type_name
        self.position = position
        where = f" at position {position}" if position is not None else ""
        super().__init__(
            f"unknown event type {type_name!r}{where}: written by a newer Maestro? "
            "Upgrade this process before it reads the log.",
            type=type_name,
            position=position,
        )


class InvalidEvent(ValidationFailed):
    """An event payload does not validate against its model."""

    code = "invalid_event"


class SqlSyntaxError(ValidationFailed):
    """The SQL statement does not parse."""

    code = "sql_syntax_error"

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{message}{where}", line=line, column=column)


class ImportQueryRefused(SqlSyntaxError):
    """An import query may only SELECT columns FROM one table, with WHERE and LIMIT."""

    code = "import_query_refused"


class SourceUnavailable(MaestroError):
    """The source database cannot be reached or refused the connection."""

    code = "source_unavailable"
    status = 502
    retryable = True


class SourceTableNotFound(NotFound):
    """The source database has no such table (or this user cannot see it)."""

    code = "source_table_not_found"


class SourceColumnError(ValidationFailed):
    """A column of the source table cannot be imported: it does not exist, or its type has no mapping."""

    code = "source_column_error"

    def __init__(self, message: str, *, column: str, source_type: str | None = None) -> None:
        self.column = column
        self.source_type = source_type
        details: dict[str, Any] = {"column": column}
        if source_type is not None:
            details["source_type"] = source_type
        super().__init__(message, **details)


class SourceReadFailed(MaestroError):
    """Reading rows from the source database failed part-way; nothing read may be loaded."""

    code = "source_read_failed"
    status = 502

    def __init__(self, message: str, *, retryable: bool, column: str | None = None) -> None:
        self.retryable = retryable  # True: the same read may succeed later (a dropped connection)
        self.column = column
        details: dict[str, Any] = {"retryable": retryable}
        if column is not None:
            details["column"] = column
        super().__init__(message, **details)


class CycleDetected(Conflict):
    """The change would create a dependency cycle."""

    code = "cycle_detected"

    def __init__(
        self, path: list[str], *, cycles: list[list[str]] | None = None, advice: list[str] | None = None
    ) -> None:
        # ``path`` is the first cycle; ``cycles`` all that were found (a folder reports every one
        # at once); ``advice`` how to break them, one line per cycle.
        self.path = path
        self.cycles = cycles or [path]
        self.advice = advice or []
        shown = "; ".join(" -> ".join(cycle) for cycle in self.cycles)
        many = len(self.cycles) > 1
        message = f"{len(self.cycles)} dependency cycles: {shown}" if many else f"dependency cycle: {shown}"
        if self.advice:
            message += ". " + "; ".join(self.advice)
        details: dict[str, Any] = {"path": path, "cycles": self.cycles}
        if self.advice:
            details["advice"] = self.advice
        super().__init__(message, **details)


class InvalidDependency(ValidationFailed):
    """A declared dependency (depends_on, not_dependencies) does not hold."""

    code = "invalid_dependency"
    status = 400


class ConfigurationError(MaestroError):
    """Maestro is not configured correctly."""

    code = "configuration_error"


class Unauthenticated(MaestroError):
    """Authentication is required, or the credentials given were refused."""

    code = "unauthenticated"
    status = 401


class CredentialsRefused(Unauthenticated):
    """A token or session was presented and refused.

    The message is the same for every cause, so a caller learns nothing about which credentials
    exist; ``reason`` (never sent to the client) says which for the audit trail.
    """

    def __init__(self, message: str, *, reason: str, credential_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.credential_id = credential_id


class Forbidden(MaestroError):
    """You are authenticated but not allowed to do this."""

    code = "forbidden"
    status = 403


class ProjectNotAllowed(Forbidden):
    """Tables may not write to this project (the bigquery section's allowed_projects)."""

    code = "project_not_allowed"


class DatasetOfAnotherGroup(Forbidden):
    """The destination dataset belongs to another group."""

    code = "dataset_of_another_group"


class IdentityProviderUnavailable(Unauthenticated):
    """The identity provider could not be reached or gave an unusable answer; try again later."""

    code = "identity_provider_unavailable"
    status = 503


class ServiceUnavailable(ConfigurationError):
    """That part of Maestro (BigQuery, Cloud Storage) is not running in this process."""

    code = "service_unavailable"
    status = 503


class LoginNotConfigured(ConfigurationError):
    """Login is not configured yet: an administrator must set the OAuth client first."""

    code = "login_not_configured"
    status = 503


class RateLimited(MaestroError):
    """Too many failed attempts from this address; wait before trying again."""

    code = "too_many_requests"
    status = 429

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        self.retry_after = retry_after  # seconds: the HTTP layer sends it as Retry-After
        super().__init__(message or f"too many failed attempts; retry in {retry_after} s", retry_after=retry_after)


class TooManyStreams(MaestroError):
    """You have too many event streams open; close one (or wait for one to end) first."""

    code = "too_many_streams"
    status = 429


class SecretUnavailable(ConfigurationError):
    """A stored credential cannot be decrypted with the configured secret."""

    code = "secret_unavailable"


class BigQueryError(MaestroError):
    """BigQuery refused or failed a request."""

    code = "bigquery_error"
    status = 502

    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        self.reason = reason
        self.retryable = retryable  # True: the same request may succeed later (retry with backoff)
        super().__init__(f"BigQuery: {message} ({reason})", reason=reason, retryable=retryable)


class StorageError(MaestroError):
    """Cloud Storage refused or failed a request."""

    code = "storage_error"
    status = 502

    def __init__(self, reason: str, message: str, *, retryable: bool, uri: str = "") -> None:
        self.reason = reason
        self.retryable = retryable  # True: the same request may succeed later (retry with backoff)
        self.uri = uri
        super().__init__(
            f"Cloud Storage: {message} ({reason})", reason=reason, retryable=retryable, uri=uri
        )


class ObjectExists(StorageError):
    """The object already exists (or is not the generation expected): nothing was overwritten."""

    code = "object_exists"
    status = 409

    def __init__(self, uri: str, message: str = "") -> None:
        super().__init__(
            "conditionNotMet", message or f"{uri} exists or is not the generation expected",
            retryable=False, uri=uri,
        )


class ObjectNotFound(NotFound):
    """No such object in Cloud Storage."""

    code = "object_not_found"


class ObjectNotLoadable(ValidationFailed):
    """This object may not be loaded into this table."""

    code = "object_not_loadable"
    status = 400


class LoadExists(Conflict):
    """This object generation was already planned as a load: each generation loads once."""

    code = "load_exists"


class DatabaseUnavailable(MaestroError):
    """PostgreSQL cannot be reached right now; try again shortly."""

    code = "database_unavailable"
    status = 503
    retryable = True


# SQLSTATE classes that mean "the server, not the statement": 08 connection exception, 57P
# operator intervention (admin/crash shutdown, cannot connect now), 53 insufficient resources.
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53")


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says PostgreSQL is unreachable or restarting (the statement itself may
    succeed later), whatever layer raised it. Duck-typed, so callers need not import the driver:
    the driver's connection errors carry a SQLSTATE of class 08/57P/53, a closed connection is an
    ``InterfaceError``, and a refused socket is an ``OSError``."""
    if isinstance(exc, DatabaseUnavailable | OSError | TimeoutError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
        return True
    # asyncpg.InterfaceError: "connection is closed", "pool is closing", ... (no SQLSTATE).
    return type(exc).__name__ in ("InterfaceError", "ConnectionDoesNotExistError")

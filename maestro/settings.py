"""Configuration enters once: this model, built at start-up and passed down.

Values come from CLI flags (highest), then ``MAESTRO_*`` environment variables, then defaults.
Nothing else in Maestro reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("maestro", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL >= 13 holding the event log; none starts an embedded server",
    )
    data_dir: Path = Field(default_factory=_default_data_dir, description="embedded data lives here")
    secret_file: Path | None = Field(
        default=None,
        description="file holding the master secret that encrypts stored credentials (>= 32 random "
        "bytes); none in development: <data_dir>/secret, generated once",
    )
    secret: SecretStr | None = Field(
        default=None, description="the master secret itself: development only (logs a warning)"
    )
    project: str = Field(
        default="maestro-local",
        description="Google Cloud project: the default project of table names and BigQuery jobs",
    )
    google_project: str | None = Field(
        default=None, description="run against Google Cloud in this project; none: the local stack"
    )
    google_credentials_file: Path | None = Field(
        default=None, description="service-account JSON (signs extract URLs); none: application default"
    )
    bigquery_location: str | None = None
    gcs_bucket: str = Field(default="maestro-local", description="extracts are written here")
    local_stack: bool = Field(default=True, description="start local BigQuery/GCS without a project")
    localbq_venv: Path | None = Field(
        default=None, description="the local stack's virtualenv (default: <repo>/.venv-localbq)"
    )
    fake_gcs_server: Path | None = Field(
        default=None, description="a fake-gcs-server binary (default: the one in the local stack's venv)"
    )
    workers: int = Field(default=16, ge=1, description="BigQuery jobs in flight, at most")
    job_timeout: float = Field(
        default=6 * 3600.0, gt=0, description="seconds after its plan a job is cancelled and failed (timeout)"
    )
    job_wait: Literal["auto", "server", "poll"] = Field(
        default="auto",
        description="how finished jobs are noticed: server-side waits (Google), polling every <= 1 s "
        "(the local stack, whose waits answer late), or auto: by where BigQuery is",
    )
    leader_check: float = Field(
        default=1.0, gt=0, description="seconds between the runner leader's checks of its lock"
    )
    price_per_tib: float = Field(default=6.25, ge=0, description="USD per TiB billed (on-demand)")
    export_max_rows: int = Field(default=100_000_000, gt=0, description="database exports: rows per export, at most")
    export_max_bytes: int = Field(
        default=10 * 1024**3, gt=0, description="database exports: the extract files' size (as stored), at most"
    )
    export_timeout: float = Field(
        default=3600.0, gt=0, description="Sheets and database exports: seconds one attempt may take"
    )
    export_retry_initial: float = Field(
        default=30.0, gt=0, description="Sheets and database exports: seconds before the first retry (then doubling)"
    )
    export_retry_max_delay: float = Field(default=1800.0, gt=0, description="exports: seconds between retries, at most")
    export_retry_window: float = Field(
        default=12 * 3600.0, gt=0, description="exports: seconds after the job that retries may still start"
    )
    # Google's APIs elsewhere than googleapis.com (a Private Service Connect endpoint; the tests'
    # local servers). Used with the BigQuery section's service account.
    bigquery_endpoint: str | None = Field(default=None, description="BigQuery API endpoint (default Google's)")
    storage_endpoint: str | None = Field(default=None, description="Cloud Storage API endpoint (default Google's)")
    sheets_endpoint: str | None = Field(default=None, description="Sheets and Drive API endpoint (default Google's)")
    scheduler_tick: float = Field(default=1.0, gt=0, description="seconds between scheduler ticks")
    signed_url_lifetime: int = Field(default=4 * 3600, gt=0, le=7 * 86400, description="seconds")
    upload_url_lifetime: int = Field(
        default=4 * 3600, gt=0, le=7 * 86400, description="seconds an external table's upload URL is valid"
    )
    external_wait_override: float | None = Field(
        default=None, gt=0,
        description="testing only: every external table in a run waits this many seconds, not its wait_timeout",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: readable text when stderr is a terminal, JSON otherwise"
    )
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    poll_interval: float = Field(default=1.0, gt=0, description="subscription polling fallback (s)")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    shutdown_timeout: float = Field(default=10.0, gt=0)
    # Server-Sent Events (GET /api/v1/runs/{id}/events): a stream ends at the run's end or after
    # this long (the client reconnects with Last-Event-ID), the caller's credentials are checked
    # again (and a keep-alive written, which notices a gone client) every recheck interval.
    sse_max_lifetime: float = Field(default=15 * 60.0, gt=0, description="seconds a stream stays open")
    sse_recheck_interval: float = Field(default=5.0, gt=0, description="seconds between standing checks")
    sse_streams_per_user: int = Field(default=8, ge=1, description="open streams per user and process")

    # Login with OpenID Connect (docs/auth.md). Until a client id, secret and allowed domains are
    # set, /login answers 503 and only API tokens (the bootstrap one first) get in.
    public_url: str | None = Field(
        default=None, description="the address users reach Maestro at; default http://<host>:<port>"
    )
    oidc_issuer: str = Field(default="https://accounts.google.com", description="any OIDC issuer")
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_redirect_uri: str | None = Field(default=None, description="default <public_url>/auth/callback")
    allowed_email_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated; exact matches; '*' admits any domain"
    )
    auto_enable_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated: new users of these domains start enabled"
    )
    initial_admins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated emails: these people become administrators at their first login",
    )
    session_lifetime: int = Field(default=12 * 3600, gt=0, le=30 * 86400, description="seconds")
    auth_failure_burst: int = Field(default=20, ge=1, description="failed logins/tokens per address, at once")
    auth_failures_per_minute: float = Field(default=10.0, gt=0, description="and then this many a minute")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For is believed",
    )

    # Completion callbacks (docs/callbacks.md). Destinations that resolve to loopback, private,
    # link-local or other non-global addresses are refused unless in one of these networks.
    callback_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated addresses/CIDRs callbacks may reach although not globally routable",
    )
    callback_timeout: float = Field(default=10.0, gt=0, le=120, description="seconds one callback attempt may take")
    callback_retry_initial: float = Field(default=5.0, gt=0, description="seconds before the first retry (then doubling)")
    callback_retry_max_delay: float = Field(default=3600.0, gt=0, description="seconds between retries, at most")
    callback_retry_window: float = Field(
        default=24 * 3600.0, gt=0, description="seconds after the extract during which a callback is retried"
    )

    @field_validator("allowed_email_domains", "auto_enable_domains", "initial_admins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [d.strip().lower() for d in value.split(",") if d.strip()]
        return value

    @field_validator("trusted_proxies", "callback_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        values = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        for v in values:  # checked at start-up, not at the first request
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ValueError(f"{v!r} is not an IP address or CIDR network") from None
        return values

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def with_overrides(self, **overrides: Any) -> Settings:
        """Settings with CLI flags applied (flags that were not given are None and ignored)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return self.model_copy(update=given) if given else self


def load_settings(**overrides: Any) -> Settings:
    return Settings().with_overrides(**overrides)

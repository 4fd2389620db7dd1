"""Configuration enters once: this model, built at start-up and passed down.

Values come from CLI flags (highest), then ``MAESTRO_*`` environment variables, then defaults.
Nothing else in Maestro reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("maestro", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAESTRO_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL >= 13 holding the event log; none starts an embedded server",
    )
    data_dir: Path = Field(default_factory=_default_data_dir, description="embedded data lives here")
    project: str = Field(
        default="maestro-local",
        description="Google Cloud project: the default project of table names and BigQuery jobs",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    poll_interval: float = Field(default=1.0, gt=0, description="subscription polling fallback (s)")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    shutdown_timeout: float = Field(default=10.0, gt=0)

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def with_overrides(self, **overrides: Any) -> Settings:
        """Settings with CLI flags applied (flags that were not given are None and ignored)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return self.model_copy(update=given) if given else self


def load_settings(**overrides: Any) -> Settings:
    return Settings().with_overrides(**overrides)

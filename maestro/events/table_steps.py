"""What a summary table does after its query succeeds: its extract (and completion callback) and
its Google Sheets export (the database export, which names columns, stays in
:mod:`maestro.events.catalog`). Part of :class:`maestro.events.catalog.TableSpec`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

__all__ = ["ExtractSettings", "SheetsExport"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_COMPRESSIONS = {
    "csv": {"none", "gzip"},
    "ndjson": {"none", "gzip"},
    "avro": {"none", "deflate", "snappy"},
    "parquet": {"none", "gzip", "snappy"},
}


class ExtractSettings(_Model):
    format: Literal["csv", "ndjson", "avro", "parquet"] = "csv"
    compression: Literal["none", "gzip", "deflate", "snappy"] = "gzip"
    notify_url: HttpUrl | None = None
    # The extracted data is for the table's group (and administrators) unless this says everyone
    # may have it; the SQL is readable by every enabled user either way (docs/auth.md).
    shared: bool = False

    @model_validator(mode="after")
    def _compression_fits(self) -> ExtractSettings:
        if self.compression not in _COMPRESSIONS[self.format]:
            allowed = ", ".join(sorted(_COMPRESSIONS[self.format]))
            raise ValueError(f"{self.format} extracts take compression {allowed}")
        return self


class SheetsExport(_Model):
    """After a successful query the result goes to a Google spreadsheet (docs/sheets.md)."""

    # The spreadsheet the exports write to. None: the first export creates one and returns its id,
    # which the caller records (an event), so every later export reuses it.
    sheet_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,200}$")
    # Tabs kept, the newest (front) first; the run's dated tab is one of them.
    keep_tabs: int = Field(7, ge=1, le=200)

"""A table's latest extract: its files in Cloud Storage, handed out as signed URLs."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import orjson

from maestro.adapters.bigquery import signed_url
from maestro.handlers.catalog.service import CatalogService


async def latest_extract(
    catalog: CatalogService, storage: Any, signer: Any, table_id: str, lifetime: dt.timedelta
) -> dict[str, Any] | None:
    """The latest successful extract's files with v4 signed URLs valid for ``lifetime``."""
    await catalog.get_table(table_id)  # 404 for an unknown table
    row = await catalog.pool.fetchrow(
        "SELECT job_id, run_id, finished_at, destination_uris::text FROM jobs "
        "WHERE table_id = $1 AND kind = 'extract' AND state = 'succeeded' ORDER BY finished_at DESC LIMIT 1",
        table_id,
    )
    if row is None:
        return None
    files = orjson.loads(row["destination_uris"])
    urls = await asyncio.gather(
        *(asyncio.to_thread(signed_url, storage, uri, lifetime=lifetime, credentials=signer) for uri in files)
    )
    return {
        "job_id": row["job_id"],
        "run_id": row["run_id"],
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "expires_at": (dt.datetime.now(dt.timezone.utc) + lifetime).isoformat(),
        "files": [{"uri": uri, "url": url} for uri, url in zip(files, urls, strict=True)],
    }

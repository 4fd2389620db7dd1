"""External uploads as the original Maestro's clients make them.

Its client PUTs every upload with ``Content-Type: application/octet-stream`` (reference §5), and a
v4 signature covers the content type, so the ``UploadURL`` of the original's routes is signed for
exactly that type (the object lands under the table's upload prefix as any upload does; BigQuery
reads it by the table's format, not by its content type). Its client then names the object to
load by the last segment of the URL's path (``fn``): a bare file name is taken to be under the
table's upload prefix, which is also the only place a table may load from.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from maestro.adapters.bigquery import signed_url
from maestro.errors import ValidationFailed
from maestro.events.catalog import TableSpec
from maestro.handlers.runs.uploads import FORMATS, upload_prefix

CONTENT_TYPE = "application/octet-stream"


def _sign(storage: Any, signer: Any, bucket: str, spec: TableSpec, lifetime: dt.timedelta) -> str:
    _, suffix, _ = FORMATS[spec.external.format if spec.external else "csv"]
    now = dt.datetime.now(dt.timezone.utc)
    name = f"{upload_prefix(spec)}{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}.{suffix}"
    return signed_url(storage, f"gs://{bucket}/{name}", lifetime=lifetime, credentials=signer, method="PUT",
                      content_type=CONTENT_TYPE)


async def octet_upload_url(storage: Any, signer: Any, bucket: str, spec: TableSpec, lifetime: dt.timedelta) -> str:
    return await asyncio.to_thread(_sign, storage, signer, bucket, spec, lifetime)


def load_body(fn: str | None, spec: TableSpec) -> dict[str, Any]:
    """The ``POST /tables/{id}/load`` body that the form field ``fn`` means."""
    if not fn or not fn.strip():
        raise ValidationFailed("fn: the name of the uploaded object is required", field="fn")
    fn = fn.strip()
    if fn.startswith("gs://"):
        return {"object": fn}
    return {"name": fn if "/" in fn else upload_prefix(spec) + fn}

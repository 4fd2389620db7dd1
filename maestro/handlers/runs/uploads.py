"""External tables: where an upload goes, and the command that loads an uploaded object, once.

An external table's files come from outside: ``GET /tables/{id}`` hands the table's writers a
signed v4 PUT URL for a new object under the table's upload prefix
(``uploads/<dataset>/<name>/``), and ``POST /tables/{id}/load`` names the object to load. The
command reads the object's live generation and plans a BigQuery load job whose id derives from
(table, object, generation): the ``JobPlanned`` stream of that id can be created once, so the same
object generation is loaded exactly once however often (or from however many replicas) it is
asked. The runner executes the plan (maestro.handlers.runs.loads) and deletes the object after
the load when the table says so.

Only objects under the table's own upload prefix may be loaded: a member of one group must not
be able to load -- and, with ``delete_after_load``, delete -- another group's uploads or
extracts, which live in the same bucket.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from maestro.adapters.bigquery import signed_url
from maestro.adapters.gcs import split_uri, stat_object
from maestro.errors import (
    ConcurrencyConflict,
    Conflict,
    LoadExists,
    ObjectNotFound,
    ObjectNotLoadable,
    ValidationFailed,
)
from maestro.events.catalog import TableSpec
from maestro.events.imports import ExternalLoadRequested, import_stream
from maestro.events.model import Metadata
from maestro.events.runs import JobConfig, JobPlanned
from maestro.events.store import ANY_VERSION, NO_STREAM, EventStore
from maestro.handlers.runs.service import job_config

# catalog format -> (BigQuery source format, object suffix, the Content-Type the upload sends)
FORMATS: dict[str, tuple[str, str, str]] = {
    "csv": ("CSV", "csv", "text/csv"),
    "ndjson": ("NEWLINE_DELIMITED_JSON", "json", "application/x-ndjson"),
    "parquet": ("PARQUET", "parquet", "application/vnd.apache.parquet"),
    "avro": ("AVRO", "avro", "application/avro"),
}
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def upload_prefix(spec: TableSpec) -> str:
    """The object names a table's uploads get (and the only ones it may load)."""
    return f"uploads/{spec.dataset}/{spec.name}/"


def _external(spec: TableSpec) -> Any:
    if spec.kind != "external" or spec.external is None:
        raise Conflict(f"{spec.qualified_name} is a {spec.kind} table; only external tables take uploads")
    return spec.external


def upload_target(
    storage: Any, signer: Any, bucket: str, spec: TableSpec, lifetime: dt.timedelta, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """A new object name under the table's prefix and a signed PUT URL for it (blocking: signs)."""
    _, suffix, content_type = FORMATS[_external(spec).format]
    now = now or dt.datetime.now(dt.timezone.utc)
    name = f"{upload_prefix(spec)}{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}.{suffix}"
    uri = f"gs://{bucket}/{name}"
    url = signed_url(storage, uri, lifetime=lifetime, credentials=signer, method="PUT", content_type=content_type)
    return {
        "url": url, "object": uri, "expires_at": (now + lifetime).isoformat(), "method": "PUT",
        "content_type": content_type,
    }


def load_job_id(table_id: str, uri: str, generation: int) -> str:
    """The BigQuery job id of the load of one object generation into one table.

    >>> load_job_id("t1", "gs://b/uploads/ds/t/a.csv", 1700000000000000)
    'maestro_load_adhoc_t1_11a7a729b7422dad'
    """
    digest = hashlib.sha256(json.dumps(["load", table_id, uri, generation]).encode()).hexdigest()[:16]
    return f"maestro_load_adhoc_{_JOB_ID_UNSAFE.sub('_', table_id)[:400]}_{digest}"


def load_config(table_id: str, spec: TableSpec, project: str, uri: str, generation: int) -> JobConfig:
    """The load job of one uploaded object: the table's format, schema (or autodetect), disposition,
    partitioning and clustering, labelled as a query job of the table is."""
    ext = _external(spec)
    base = job_config(table_id, spec, project, None)  # the destination and labels of an ad-hoc job
    source_format, _, _ = FORMATS[ext.format]
    fields = list(ext.schema_fields)
    return JobConfig(
        kind="load", project=project, destination=base.destination, labels=base.labels,
        source_uris=[uri], source_generations=[generation], source_format=source_format,  # type: ignore[arg-type]
        load_schema=fields, autodetect=not fields and ext.format in ("csv", "ndjson"),
        skip_leading_rows=ext.skip_leading_rows if ext.format == "csv" else 0,
        write_disposition="WRITE_APPEND" if spec.write_disposition == "append" else "WRITE_TRUNCATE",
        partitioning=spec.partitioning.model_dump() if spec.partitioning else None,
        clustering=list(spec.clustering), delete_source=ext.delete_after_load, max_attempts=1,
    )


def object_uri(body: dict[str, Any], bucket: str, spec: TableSpec) -> str:
    """The ``gs://`` URI the request names, checked: in the bucket, under the table's prefix."""
    given = [k for k in ("object", "name") if body.get(k) is not None]
    if len(given) != 1:
        raise ValidationFailed('send either "object" (a gs:// URI) or "name" (an object name in the bucket)')
    value = body[given[0]]
    if not isinstance(value, str) or not value:
        raise ValidationFailed(f"{given[0]}: a non-empty string")
    if given[0] == "object":
        try:
            got_bucket, name = split_uri(value)
        except ValueError:
            raise ValidationFailed(f"object: {value!r} is not a gs://bucket/object URI") from None
        if got_bucket != bucket:
            raise ObjectNotLoadable(f"{value} is not in the bucket uploads go to ({bucket})", object=value, bucket=bucket)
    else:
        name = value
    prefix = upload_prefix(spec)
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments) or any(ord(c) < 32 for c in name):
        raise ObjectNotLoadable(f"{name!r} is not a plain object name", object=name)
    if not name.startswith(prefix) or name == prefix:
        raise ObjectNotLoadable(
            f"{name} is not an upload of {spec.qualified_name}: only objects under gs://{bucket}/{prefix} "
            "(where its upload URLs put them) load into it", object=name, allowed_prefix=f"gs://{bucket}/{prefix}",
        )
    return f"gs://{bucket}/{name}"


@dataclass(frozen=True)
class LoadRequest:
    job_id: str
    uri: str
    generation: int


async def request_load(
    store: EventStore, storage: Any, bucket: str, project: str, table_id: str, spec: TableSpec,
    body: dict[str, Any], actor: Metadata,
) -> LoadRequest:
    """Plan the load of the object ``body`` names (its generation now).

    Checks first, appends after: a refused request (not external, not loadable, no such object)
    appends nothing. A generation planned before raises :class:`LoadExists` (409) naming its load:
    nothing is loaded twice."""
    _external(spec)
    uri = object_uri(body, bucket, spec)
    found = await stat_object(storage, uri)
    if found is None:
        raise ObjectNotFound(f"no object {uri}: upload it first (PUT to the table's upload URL)", object=uri)
    job_id = load_job_id(table_id, uri, found.generation)
    config = load_config(table_id, spec, project, uri, found.generation)
    planned = JobPlanned(
        job_id=job_id, run_id=None, table_id=table_id, attempt=1, config=config,
        owner_id=spec.owner_id, group_id=spec.group_id,
    )
    requested = ExternalLoadRequested(
        table_id=table_id, uri=uri, generation=found.generation, load_job_id=job_id,
        at=dt.datetime.now(dt.timezone.utc),
    )
    try:
        await store.append(f"job-{job_id}", NO_STREAM, [planned], actor)
    except ConcurrencyConflict:
        # Planned before (by an earlier request, perhaps on another replica, perhaps this very
        # moment): that request records itself. (Were it to die between its two appends, the
        # load still runs once; the JobPlanned names who asked.)
        state = await store.pool.fetchval("SELECT state FROM jobs WHERE job_id = $1", job_id)
        raise LoadExists(
            f"{uri} (generation {found.generation}) was already planned as load {job_id} ({state}); "
            "an object generation loads once: upload again to load new data",
            job_id=job_id, state=state, object=uri, generation=found.generation,
        ) from None
    await store.append(import_stream(table_id), ANY_VERSION, [requested], actor)
    return LoadRequest(job_id, uri, found.generation)


async def sign_upload(storage: Any, signer: Any, bucket: str, spec: TableSpec, lifetime: dt.timedelta) -> dict[str, Any]:
    return await asyncio.to_thread(upload_target, storage, signer, bucket, spec, lifetime)

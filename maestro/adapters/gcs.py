"""Cloud Storage objects that are written once and deleted by generation (issue 9).

Imports and external loads stage files in Cloud Storage. Two rules make that crash-proof:

- An object is created with ``if_generation_match=0``: it is never written over. A retry after a
  crash either finds the object it made (:func:`stat_object`) or writes under a new name.
- An object is deleted with ``if_generation_match=<the generation that was loaded>``: a newer
  object that happens to carry the same name is never deleted by mistake.

The client blocks, so each call runs in a thread. Its errors are translated here, in one place,
into :class:`StorageError` (``retryable`` says whether to try again) and :class:`ObjectExists`
(a precondition on the generation did not hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import storage
from google.cloud.storage import exceptions as storage_exceptions

from maestro.errors import ObjectExists, StorageError

__all__ = ["ObjectStat", "delete_generation", "split_uri", "stat_object", "translated"]

_GS_URI = re.compile(r"gs://([^/]+)/(.+)")
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_REASONS = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "notFound", 412: "conditionNotMet"}


@dataclass(frozen=True)
class ObjectStat:
    uri: str
    generation: int
    size: int
    crc32c: str  # base64, as Cloud Storage reports it


def split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` -> (bucket, name)."""
    match = _GS_URI.fullmatch(uri)
    if match is None:
        raise ValueError(f"not a gs://bucket/object URI: {uri!r}")
    return match.group(1), match.group(2)


@contextlib.contextmanager
def translated(uri: str) -> Iterator[None]:
    """The one place where Cloud Storage's errors become ours (STYLE.md item 9).

    Two shapes arrive: the JSON API's ``GoogleAPICallError`` and, from resumable uploads, the
    media layer's ``InvalidResponse`` (which the client translates only inside its own upload
    helpers, not in ``BlobWriter``). A 412 is :class:`ObjectExists`: nothing was overwritten.
    """
    try:
        yield
    except StorageError:
        raise
    except storage_exceptions.InvalidResponse as exc:
        status = getattr(exc.response, "status_code", 0)
        raise _error(uri, status, str(exc)) from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise _error(uri, int(exc.code or 0), exc.message) from exc
    except storage_exceptions.DataCorruption as exc:  # checksum mismatch in transit: write again
        raise StorageError("dataCorruption", str(exc), retryable=True, uri=uri) from exc
    except (requests.ConnectionError, requests.Timeout, OSError) as exc:
        raise StorageError("unreachable", f"{uri}: {exc}", retryable=True, uri=uri) from exc


def _error(uri: str, status: int, message: str) -> StorageError:
    if status == 412:
        return ObjectExists(uri)
    reason = _REASONS.get(status, f"http{status}")
    return StorageError(reason, f"{uri}: {message}", retryable=status in _RETRYABLE_STATUS, uri=uri)


async def stat_object(client: storage.Client, uri: str) -> ObjectStat | None:
    """The live object's generation, size and checksum; None when there is none."""
    bucket, name = split_uri(uri)

    def stat() -> ObjectStat | None:
        blob = client.bucket(bucket).get_blob(name)
        if blob is None:
            return None
        return ObjectStat(uri, int(blob.generation), int(blob.size), str(blob.crc32c))

    with translated(uri):
        return await asyncio.to_thread(stat)


async def delete_generation(client: storage.Client, uri: str, generation: int) -> bool:
    """Delete ``uri`` if and only if its live generation is ``generation`` (the one loaded).

    True: deleted. False: no object is there (deleted already, e.g. by the attempt that crashed
    before recording it), so calling this again after a crash is safe. Raises
    :class:`ObjectExists` when another generation lives under the name: it is left in place.
    """
    bucket, name = split_uri(uri)

    def delete() -> bool:
        try:
            client.bucket(bucket).blob(name).delete(if_generation_match=generation)
        except api_exceptions.NotFound:
            return False
        return True

    try:
        with translated(uri):
            return await asyncio.to_thread(delete)
    except ObjectExists:
        raise ObjectExists(uri, f"{uri} is no longer generation {generation}; left in place") from None

"""maestro-client's pure parts: joining extract files, retry decisions, DDL, error locations."""

from __future__ import annotations

import gzip

import httpx
import pytest

from maestro.handlers.runs.table_status import error_location as server_location
from maestro_client._extracts import FileJoiner
from maestro_client._retry import RetryPolicy
from maestro_client.ddl import pg_create_table
from maestro_client.models import Column, error_location


def _join(files: list[bytes], chunk: int) -> bytes:
    out = b""
    for i, data in enumerate(files):
        joiner = FileJoiner(keep_header=i == 0)
        for start in range(0, len(data), chunk):
            out += joiner.feed(data[start:start + chunk])
        out += joiner.end()
    return out


@pytest.mark.parametrize("chunk", [1, 2, 7, 1 << 16])
def test_files_join_into_one_csv_whatever_the_chunks(chunk: int) -> None:
    first = b"id,note\n1,\"a\nb\"\n2,x\n"
    second = b"id,note\n3,y\n"
    multi_member = gzip.compress(b"id,note\n4,") + gzip.compress(b"z\n")  # one file, two gzip members
    files = [gzip.compress(first), second, multi_member, gzip.compress(b"id,note\n")]
    assert _join(files, chunk) == b"id,note\n1,\"a\nb\"\n2,x\n3,y\n4,z\n"


def test_retries_never_repeat_a_write_that_may_have_happened() -> None:
    policy = RetryPolicy()
    assert policy.status_retryable("GET", 502) and policy.status_retryable("POST", 503)
    assert policy.status_retryable("POST", 429) and not policy.status_retryable("POST", 502)
    assert not policy.status_retryable("GET", 404)
    request = httpx.Request("POST", "http://x")
    assert policy.error_retryable("POST", httpx.ConnectError("refused", request=request))
    assert not policy.error_retryable("POST", httpx.ReadError("reset", request=request))
    assert policy.error_retryable("GET", httpx.ReadError("reset", request=request))
    assert policy.pause(3, "7") == 7.0 and policy.pause(1, "999") == policy.max_backoff
    assert all(0 <= policy.pause(n) <= min(policy.max_backoff, policy.backoff * 2 ** (n - 1)) for n in range(1, 10))


def test_pg_ddl_quotes_and_maps_types() -> None:
    columns = [Column("id", "INT64", "REQUIRED"), Column("Order", "STRING", "NULLABLE"),
               Column("tags", "STRING", "REPEATED"), Column("meta", "RECORD", "NULLABLE", (Column("a", "INT64", "NULLABLE"),)),
               Column("at", "TIMESTAMP", "NULLABLE")]
    assert pg_create_table("s.t", columns, if_not_exists=True) == (
        'CREATE TABLE IF NOT EXISTS s.t (\n    id bigint NOT NULL,\n    "Order" text,\n    tags text[],\n'
        "    meta jsonb,\n    at timestamp with time zone\n);"
    )
    with pytest.raises(ValueError, match="no PostgreSQL type"):
        pg_create_table("t", [Column("g", "WHATEVER", "NULLABLE")])


def test_error_location_agrees_with_the_server() -> None:
    for message in ("Syntax error: Unexpected end of script at [3:15]", "Access Denied", None,
                    "Function not found: f at [2:3]; did you mean g at [9:9]"):
        assert error_location(message) == server_location(message)
    assert error_location("x at [2:3]") == (2, 3)

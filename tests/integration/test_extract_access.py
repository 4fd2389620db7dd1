"""Extracted data is for the table's group and administrators, or everyone when shared.

Before: any enabled user got signed URLs to (and the names of) any group's extract files.
"""

from __future__ import annotations

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from people import TESTS, bearer, user_token

from maestro.events.catalog import ExtractSettings, TableSpec
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import NO_STREAM
from maestro.http.app import create_app


async def _extracted(runtime, group_id: str | None, name: str, *, shared: bool = False) -> tuple[str, str]:
    """A table with a finished extract job (its file need not exist: URLs are signed offline)."""
    view = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name=name, query="SELECT 1 AS x", group_id=group_id,
                  extract=ExtractSettings(shared=shared)), TESTS,
    )
    uri = f"gs://maestro-local/extracts/ds/{name}/r1/part-000000000000.csv.gz"
    job_id = f"extract-{name}"
    config = JobConfig(kind="extract", project="maestro-local", source=f"maestro-local.ds.{name}", destination_uris=[uri])
    await runtime.store.append(f"job-{job_id}", NO_STREAM, [
        JobPlanned(job_id=job_id, run_id="r1", table_id=view.table_id, config=config, group_id=group_id),
        JobSucceeded(job_id=job_id, run_id="r1", table_id=view.table_id, statistics=JobStatistics(),
                     destination_uris=[uri]),
    ], TESTS)
    return view.table_id, uri


@pytest.fixture
async def world(runtime, services):
    group = await runtime.users.create_group("analysts", TESTS)
    tables = {
        "private": await _extracted(runtime, group.group_id, "private"),
        "shared": await _extracted(runtime, group.group_id, "open", shared=True),
        "orphan": await _extracted(runtime, None, "orphan"),
    }
    tokens = {
        "admin": await user_token(runtime, "root", admin=True),
        "member": await user_token(runtime, "mia", groups=(group.group_id,)),
        "plain": await user_token(runtime, "paul"),
    }
    async with TestClient(TestServer(create_app(runtime.settings, runtime=runtime))) as client:
        yield client, tables, tokens


@pytest.mark.parametrize(("who", "table", "allowed"), [
    ("plain", "private", False), ("member", "private", True), ("admin", "private", True),
    ("plain", "shared", True), ("member", "orphan", False), ("admin", "orphan", True),
])
async def test_signed_urls_only_for_the_group_admins_or_shared(world, who: str, table: str, allowed: bool) -> None:
    client, tables, tokens = world
    table_id, uri = tables[table]
    resp = await client.get(f"/api/v1/tables/{table_id}/extracts", headers=bearer(tokens[who]))
    text = await resp.text()
    if allowed:
        assert resp.status == 200, text
        files = orjson.loads(text)["extract"]["files"]
        assert [f["uri"] for f in files] == [uri] and "X-Goog-Signature=" in files[0]["url"]
    else:
        body = orjson.loads(text)
        assert resp.status == 403 and body["error"]["code"] == "forbidden"
        assert body["error"]["details"]["rule"] == "extract"
        assert "gs://" not in text and "X-Goog" not in text and "extracts/" not in text


async def test_job_listing_hides_the_file_names_from_others(world) -> None:
    client, tables, tokens = world
    table_id, uri = tables["private"]
    for who, files in (("plain", None), ("member", [uri]), ("admin", [uri])):
        resp = await client.get(f"/api/v1/tables/{table_id}/jobs", headers=bearer(tokens[who]))
        jobs = (await resp.json())["jobs"]
        assert resp.status == 200 and len(jobs) == 1
        assert jobs[0]["files"] == files, who
    shared_id, shared_uri = tables["shared"]
    resp = await client.get(f"/api/v1/tables/{shared_id}/jobs", headers=bearer(tokens["plain"]))
    assert (await resp.json())["jobs"][0]["files"] == [shared_uri]
    # The SQL stays readable by every enabled user: a shared catalog.
    resp = await client.get(f"/api/v1/tables/{table_id}", headers=bearer(tokens["plain"]))
    assert resp.status == 200 and (await resp.json())["query"] == "SELECT 1 AS x"

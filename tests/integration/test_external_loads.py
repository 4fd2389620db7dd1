"""External tables on the local stack: upload through the signed PUT URL, load once per object
generation, delete after the load, and a run's wait for the upload (issue 9, items 8 and 9).

Everything is real: the upload is an HTTP PUT to the v4 signed URL ``GET /tables/{id}`` hands out
(fake-gcs-server takes it; it checks neither the signature nor the expiry -- real Cloud Storage
does: tests/integration/test_localstack.py), the load runs on local-bigquery, the runner is the
service's own. Waits use ``RunnerConfig.external_wait_override`` (a few seconds) because the API
keeps ``wait_timeout`` at 60 s or more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcs_preconditions import precondition_proxy
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from maestro.adapters.gcs import stat_object
from maestro.adapters.localstack import bigquery_client
from maestro.events import Metadata
from maestro.events.runs import JobConfig, JobPlanned, JobSucceeded, JobStatistics
from maestro.events.store import NO_STREAM
from maestro.handlers.runs.uploads import load_job_id
from people import TESTS, bearer, user_token

ME = Metadata(actor="system:tests")
BUCKET = "maestro-local"


@pytest.fixture
def bq(local_stack):
    client = bigquery_client(local_stack)
    yield client
    client.close()


def _put(url: str, data: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": content_type})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return response.status


async def _external(client, name: str, dataset: str = "ext", **external) -> str:
    body = {"dataset": dataset, "name": name, "kind": "external", "external": external}
    resp = await client.post("/api/v1/tables", json=body)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def _upload(client, table_id: str, data: bytes) -> str:
    """PUT ``data`` to the table's signed upload URL; the object's gs:// URI."""
    table = await (await client.get(f"/api/v1/tables/{table_id}")).json()
    upload = table["upload"]
    assert upload["method"] == "PUT"
    assert await asyncio.to_thread(_put, upload["url"], data, upload["content_type"]) == 200
    return upload["object"]


async def _load(client, table_id: str, uri: str) -> str:
    resp = await client.post(f"/api/v1/tables/{table_id}/load", json={"object": uri})
    assert resp.status == 202, await resp.text()
    return (await resp.json())["job_id"]


async def _ended(client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = await (await client.get(f"/api/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)


async def _deleted(client, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = await (await client.get(f"/api/v1/jobs/{job_id}")).json()
        if job["sources_deleted"] is not None:
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)


async def _run_done(client, run_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = await (await client.get(f"/api/v1/runs/{run_id}")).json()
        if run["status"] != "running":
            return run
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.1)


async def _count(runtime, sql: str, *args) -> int:
    return await runtime.pool.fetchval(sql, *args)


def _rows(bq: bigquery.Client, sql: str) -> list[tuple]:
    return [tuple(r.values()) for r in bq.query(sql, job_retry=None).result()]


# ---------------------------------------------------------------------------------------- loads
async def test_csv_uploaded_through_the_signed_url_loads_with_header_autodetect_and_is_deleted(
    client, services, runtime, bq
) -> None:
    table_id = await _external(client, "csv_in", format="csv")
    table = await (await client.get(f"/api/v1/tables/{table_id}")).json()
    upload = table["upload"]
    assert upload["object"].startswith(f"gs://{BUCKET}/uploads/ext/csv_in/") and upload["object"].endswith(".csv")
    assert upload["content_type"] == "text/csv" and upload["method"] == "PUT"
    assert "X-Goog-Signature=" in upload["url"] and "X-Goog-Expires=14400" in upload["url"]
    assert "X-Goog-SignedHeaders=content-type%3Bhost" in upload["url"]  # the Content-Type is signed
    again = (await (await client.get(f"/api/v1/tables/{table_id}")).json())["upload"]
    assert again["object"] != upload["object"]  # every GET: a new object name

    data = b"id,name,day\n1,alpha,2024-01-01\n2,beta,2024-02-29\n3,gamma,2024-03-01\n"
    assert await asyncio.to_thread(_put, upload["url"], data, "text/csv") == 200
    stat = await stat_object(services.storage, upload["object"])
    assert stat is not None and stat.size == len(data)

    job_id = await _load(client, table_id, upload["object"])
    assert job_id == load_job_id(table_id, upload["object"], stat.generation)
    job = await _deleted(client, job_id)
    assert job["state"] == "succeeded", job
    assert job["kind"] == "load" and job["run_id"] is None and job["sources"] == [upload["object"]]
    assert job["statistics"]["output_rows"] == 3 and job["statistics"]["input_files"] == 1
    assert job["statistics"]["input_file_bytes"] == len(data)
    assert job["sources_deleted"] == {"uris": [upload["object"]], "missing": [], "kept": [], "errors": {}}
    assert await stat_object(services.storage, upload["object"]) is None

    got = _rows(bq, "SELECT id, name, day FROM `maestro-local.ext.csv_in` ORDER BY id")
    assert [r[:2] for r in got] == [(1, "alpha"), (2, "beta"), (3, "gamma")]
    assert str(got[1][2]) == "2024-02-29"

    # Labelled as query jobs are (item 9), and counted by costs: free, 0 bytes billed.
    labels = bq.get_job(job_id).labels
    assert labels["maestro_table"] == table_id.lower() and labels["maestro_run"] == "adhoc"
    assert labels["maestro_owner"] == "admin-1" and labels["maestro_group"] == "none"
    await runtime.projections.catch_up("costs")
    costs = await (await client.get("/api/v1/costs", params={"by": "table"})).json()
    [item] = [i for i in costs["items"] if i["table"] == table_id]
    assert item["jobs"] == 1 and item["bytes_billed"] == 0 and item["usd"] == 0

    # The request is on the import stream, by whom made it.
    [requested] = await runtime.store.read(f"import-{table_id}")
    assert requested.type == "ExternalLoadRequested" and requested.event.load_job_id == job_id
    assert requested.event.generation == stat.generation and requested.metadata.actor == "user:admin-1"


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
async def test_ndjson_and_parquet_uploads_load_row_for_row(client, services, bq, fmt: str) -> None:
    rows = [{"id": 1, "name": "alpha", "score": 0.5}, {"id": 2, "name": None, "score": -1.25}]
    if fmt == "ndjson":
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    else:
        out = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), out)
        data = out.getvalue()
    table_id = await _external(client, f"{fmt}_in", format=fmt)
    uri = await _upload(client, table_id, data)
    assert uri.endswith(".json" if fmt == "ndjson" else ".parquet")
    job = await _deleted(client, await _load(client, table_id, uri))
    assert job["state"] == "succeeded", job
    assert job["statistics"]["output_rows"] == 2
    got = _rows(bq, f"SELECT id, name, score FROM `maestro-local.ext.{fmt}_in` ORDER BY id")
    assert got == [(1, "alpha", 0.5), (2, None, -1.25)]


async def test_avro_from_a_bigquery_extract_loads(client, services, bq) -> None:
    """Avro files as BigQuery itself writes them (an extract into the table's upload prefix)."""
    source = bq.query("SELECT 7 AS id, 'seven' AS name UNION ALL SELECT 8, 'eight'", job_retry=None)
    source.result()
    table_id = await _external(client, "avro_in", format="avro")
    uri = f"gs://{BUCKET}/uploads/ext/avro_in/from-extract.avro"
    extract = bq.extract_table(source.destination, uri, job_config=bigquery.ExtractJobConfig(destination_format="AVRO"))
    await asyncio.to_thread(extract.result)
    job = await _deleted(client, await _load(client, table_id, uri))
    assert job["state"] == "succeeded", job
    assert _rows(bq, "SELECT id, name FROM `maestro-local.ext.avro_in` ORDER BY id") == [(7, "seven"), (8, "eight")]


async def test_a_declared_csv_schema_loads_and_bad_rows_fail_the_load_with_its_reason(client, services, bq) -> None:
    schema = [{"name": "id", "type": "INT64"}, {"name": "amount", "type": "NUMERIC"}]
    table_id = await _external(client, "typed_in", format="csv", schema=schema, skip_leading_rows=1)
    job = await _deleted(client, await _load(client, table_id, await _upload(client, table_id, b"id,amount\n1,2.50\n")))
    assert job["state"] == "succeeded", job
    assert [(r[0], str(r[1])) for r in _rows(bq, "SELECT id, amount FROM `maestro-local.ext.typed_in`")] == [(1, "2.5")]
    job = await _deleted(client, await _load(client, table_id, await _upload(client, table_id, b"id,amount\nx,y\n")))
    assert job["state"] == "failed" and job["reason"] == "invalid" and "too many errors" in job["error"]
    assert job["sources_deleted"]["uris"]  # a failed load's upload is spent too: deleted
    assert _rows(bq, "SELECT COUNT(*) FROM `maestro-local.ext.typed_in`") == [(1,)]  # replace did not happen


async def test_the_same_object_generation_loads_exactly_once(client, services, runtime, bq) -> None:
    table_id = await _external(client, "once", format="csv", delete_after_load=False)
    await client.patch(f"/api/v1/tables/{table_id}", json={"write_disposition": "append"})
    upload = (await (await client.get(f"/api/v1/tables/{table_id}")).json())["upload"]
    await asyncio.to_thread(_put, upload["url"], b"id\n1\n2\n", "text/csv")

    # Concurrent requests for the same generation: one plans the load, the others are told.
    answers = await asyncio.gather(*(
        client.post(f"/api/v1/tables/{table_id}/load", json={"name": upload["object"].split("/", 3)[3]})
        for _ in range(4)
    ))
    statuses = sorted(a.status for a in answers)
    assert statuses == [202, 409, 409, 409]
    bodies = [await a.json() for a in answers]
    job_id = next(b["job_id"] for b in bodies if "job_id" in b)
    for b in bodies:
        if "error" in b:
            assert b["error"]["code"] == "load_exists" and b["error"]["details"]["job_id"] == job_id
    assert (await _ended(client, job_id))["state"] == "succeeded"
    resp = await client.post(f"/api/v1/tables/{table_id}/load", json={"object": upload["object"]})
    assert resp.status == 409 and (await resp.json())["error"]["details"]["state"] == "succeeded"
    assert await _count(runtime, "SELECT count(*) FROM jobs WHERE table_id = $1 AND kind = 'load'", table_id) == 1
    assert await _count(runtime, "SELECT count(*) FROM events WHERE stream_id = $1", f"import-{table_id}") == 1
    assert _rows(bq, "SELECT COUNT(*) FROM `maestro-local.ext.once`") == [(2,)]  # appended once

    # The same URL again writes a new generation: that is new data, loaded (and appended) anew.
    await asyncio.to_thread(_put, upload["url"], b"id\n3\n", "text/csv")
    second = await _load(client, table_id, upload["object"])
    assert second != job_id and (await _ended(client, second))["state"] == "succeeded"
    assert _rows(bq, "SELECT COUNT(*) FROM `maestro-local.ext.once`") == [(3,)]
    assert (await stat_object(services.storage, upload["object"])) is not None  # delete_after_load: false


async def test_a_load_requested_while_the_runner_is_down_runs_once_after_it_starts(client, services, runtime, bq) -> None:
    table_id = await _external(client, "while_down", format="csv")
    uri = await _upload(client, table_id, b"id\n1\n")
    await services.runner.stop()
    job_id = await _load(client, table_id, uri)
    await asyncio.sleep(0.5)
    assert await _count(runtime, "SELECT count(*) FROM events WHERE stream_id = $1", f"job-{job_id}") == 1
    await services.runner.start()
    job = await _deleted(client, job_id)
    assert job["state"] == "succeeded"
    types = [e.type for e in await runtime.store.read(f"job-{job_id}")]
    assert types == ["JobPlanned", "JobSubmitted", "JobSucceeded", "LoadSourceDeleted"]
    assert _rows(bq, "SELECT COUNT(*) FROM `maestro-local.ext.while_down`") == [(1,)]


async def test_refused_loads_answer_clear_errors_and_append_nothing(client, services, runtime) -> None:
    table_id = await _external(client, "refusals", format="csv")
    other = await _external(client, "other", format="csv")
    summary = (await (await client.post("/api/v1/tables", json={"dataset": "ext", "name": "s", "query": "SELECT 1 AS x"})).json())["id"]
    foreign = await _upload(client, other, b"id\n1\n")  # exists, but another table's upload
    before = await _count(runtime, "SELECT count(*) FROM events")
    cases = [
        (table_id, {"object": "gs://another-bucket/uploads/ext/refusals/a.csv"}, 400, "object_not_loadable"),
        (table_id, {"object": foreign}, 400, "object_not_loadable"),
        (table_id, {"name": "extracts/ext/s/run/part-000000000000.csv"}, 400, "object_not_loadable"),
        (table_id, {"name": "uploads/ext/refusals/../other/x.csv"}, 400, "object_not_loadable"),
        (table_id, {"name": "uploads/ext/refusals/"}, 400, "object_not_loadable"),
        (table_id, {"name": "uploads/ext/refusals/never-uploaded.csv"}, 404, "object_not_found"),
        (table_id, {"object": "s3://x/y"}, 422, "validation_failed"),
        (table_id, {}, 422, "validation_failed"),
        (table_id, {"object": foreign, "name": "x"}, 422, "validation_failed"),
        (table_id, {"uri": foreign}, 422, "validation_failed"),
        (summary, {"name": "uploads/ext/s/a.csv"}, 409, "conflict"),
        ("no-such-table", {"name": "uploads/ext/s/a.csv"}, 404, "not_found"),
    ]
    for tid, body, status, code in cases:
        resp = await client.post(f"/api/v1/tables/{tid}/load", json=body)
        assert resp.status == status, (body, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == code, (body, error)
    assert await _count(runtime, "SELECT count(*) FROM events") == before
    summary_view = await (await client.get(f"/api/v1/tables/{summary}")).json()
    assert "upload" not in summary_view


async def test_only_the_tables_writers_get_an_upload_url(client, services, runtime) -> None:
    group = await runtime.users.create_group("loaders", TESTS)
    table_id = await _external(client, "guarded", format="csv")
    await client.patch(f"/api/v1/tables/{table_id}", json={"group_id": group.group_id})
    member = bearer(await user_token(runtime, "mia", groups=(group.group_id,)))
    plain = bearer(await user_token(runtime, "paul"))
    mine = await (await client.get(f"/api/v1/tables/{table_id}", headers=member)).json()
    assert mine["upload"]["url"].startswith("http")
    theirs = await (await client.get(f"/api/v1/tables/{table_id}", headers=plain)).json()
    assert theirs["upload"] is None and theirs["id"] == table_id  # the table itself is for everyone
    resp = await client.post(f"/api/v1/tables/{table_id}/load", json={"object": mine["upload"]["object"]}, headers=plain)
    assert resp.status == 403
    history = await (await client.get(f"/api/v1/tables/{table_id}", params={"as_of": "2100-01-01T00:00:00Z"})).json()
    assert "upload" not in history  # a past version is not something to upload to


# ----------------------------------------------------------------------------------- the wait
async def _wait_graph(client, name: str) -> tuple[str, str]:
    """An external table and a summary table that reads it."""
    external = await _external(client, name, dataset="waits", format="csv")
    resp = await client.post("/api/v1/tables", json={
        "dataset": "waits", "name": f"{name}_count", "query": f"SELECT COUNT(*) AS n FROM waits.{name}"})
    return external, (await resp.json())["id"]


async def _waiting(client, runtime, run_id: str, table_id: str) -> dict:
    for _ in range(300):
        row = await runtime.pool.fetchrow(
            "SELECT state, job_id, progress::text FROM run_tables WHERE run_id = $1 AND table_id = $2", run_id, table_id)
        if row is not None and row["job_id"] is not None and row["state"] == "running":
            assert json.loads(row["progress"]) == {"phase": "waiting for the upload"}
            return dict(row)
        await asyncio.sleep(0.05)
    raise AssertionError("the external table never started waiting")


def _override(services, seconds: float | None) -> None:
    services.runner.config = dataclasses.replace(services.runner.config, external_wait_override=seconds)


async def test_a_run_waits_for_the_upload_and_its_children_run_after_the_load(client, services, runtime, bq) -> None:
    external, child = await _wait_graph(client, "daily_upload")
    run_id = (await (await client.post(f"/api/v1/tables/{external}/run", json={"descendants": True})).json())["id"]
    waiting = await _waiting(client, runtime, run_id, external)
    await asyncio.sleep(1.5)  # it really waits: nothing moves without an upload
    run = await (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert run["status"] == "running" and {t["table_id"]: t["state"] for t in run["tables"]}[child] == "pending"

    load_id = await _load(client, external, await _upload(client, external, b"id\n1\n2\n3\n4\n"))
    run = await _run_done(client, run_id)
    assert run["status"] == "succeeded", run["tables"]
    assert _rows(bq, "SELECT n FROM `maestro-local.waits.daily_upload_count`") == [(4,)]
    wait_events = [e.type for e in await runtime.store.read(f"job-{waiting['job_id']}")]
    assert wait_events == ["JobPlanned", "JobSucceeded"]
    load = await _ended(client, load_id)
    child_job = (await (await client.get(f"/api/v1/tables/{child}/jobs")).json())["jobs"][0]
    assert load["finished_at"] <= child_job["planned_at"], "the child did not wait for the load"


async def test_a_load_before_the_wait_began_does_not_count(client, services, runtime) -> None:
    external, _ = await _wait_graph(client, "stale_upload")
    old = await _load(client, external, await _upload(client, external, b"id\n1\n"))
    assert (await _ended(client, old))["state"] == "succeeded"
    _override(services, 2.0)
    run_id = (await (await client.post(f"/api/v1/tables/{external}/run", json={"descendants": True})).json())["id"]
    run = await _run_done(client, run_id)
    states = {t["table_id"]: t for t in run["tables"]}
    assert run["status"] == "failed" and states[external]["state"] == "failed"


async def test_no_upload_fails_the_wait_at_its_timeout_and_skips_its_descendants(client, services, runtime) -> None:
    external, child = await _wait_graph(client, "never_uploaded")
    _override(services, 3.0)
    run_id = (await (await client.post(f"/api/v1/tables/{external}/run", json={"descendants": True})).json())["id"]
    waiting = await _waiting(client, runtime, run_id, external)
    run = await _run_done(client, run_id, timeout=30)
    assert run["status"] == "failed"
    states = {t["table_id"]: t for t in run["tables"]}
    assert states[external]["state"] == "failed"
    assert states[external]["error"] == "no upload was loaded into waits.never_uploaded within 3 s"
    assert states[child]["state"] == "skipped" and states[child]["error"].startswith("upstream_failed")
    [planned, failed] = await runtime.store.read(f"job-{waiting['job_id']}")
    assert failed.type == "JobFailed" and failed.event.reason == "timeout" and not failed.event.retryable
    waited = (failed.occurred_at - planned.occurred_at).total_seconds()
    assert 3.0 <= waited < 5.0, waited


async def test_a_failed_load_during_the_wait_fails_the_node_with_the_loads_error(client, services, runtime) -> None:
    external = await _external(client, "bad_upload", dataset="waits", format="csv",
                               schema=[{"name": "id", "type": "INT64"}])
    run_id = (await (await client.post(f"/api/v1/tables/{external}/run", json={})).json())["id"]
    await _waiting(client, runtime, run_id, external)
    load_id = await _load(client, external, await _upload(client, external, b"not-a-number\n"))
    run = await _run_done(client, run_id)
    [table] = run["tables"]
    assert run["status"] == "failed" and table["state"] == "failed"
    assert table["error"].startswith(f"the load {load_id} into waits.bad_upload failed: ")


async def test_cancelling_the_run_ends_the_wait(client, services, runtime) -> None:
    external, child = await _wait_graph(client, "cancelled_wait")
    run_id = (await (await client.post(f"/api/v1/tables/{external}/run", json={"descendants": True})).json())["id"]
    waiting = await _waiting(client, runtime, run_id, external)
    started = time.monotonic()
    assert (await client.post(f"/api/v1/runs/{run_id}/cancel")).status == 202
    run = await _run_done(client, run_id, timeout=10)
    assert time.monotonic() - started < 5
    assert run["status"] == "cancelled"
    assert {t["table_id"]: t["state"] for t in run["tables"]} == {external: "cancelled", child: "cancelled"}
    assert [e.type for e in await runtime.store.read(f"job-{waiting['job_id']}")] == ["JobPlanned", "JobCancelled"]


async def test_a_wait_resumed_after_a_restart_keeps_its_deadline(client, services, runtime) -> None:
    """The runner stops mid-wait without recording anything (as after kill -9) and starts again:
    recovery resumes the wait, which still ends at plan + timeout, once."""
    external, child = await _wait_graph(client, "restarted_wait")
    _override(services, 5.0)
    run_id = (await (await client.post(f"/api/v1/tables/{external}/run", json={"descendants": True})).json())["id"]
    waiting = await _waiting(client, runtime, run_id, external)
    await asyncio.sleep(1.0)
    await services.runner.stop()
    await asyncio.sleep(2.0)
    await services.runner.start()
    run = await _run_done(client, run_id, timeout=30)
    assert run["status"] == "failed"
    [planned, failed] = await runtime.store.read(f"job-{waiting['job_id']}")
    assert failed.event.reason == "timeout"
    waited = (failed.occurred_at - planned.occurred_at).total_seconds()
    assert 5.0 <= waited < 7.0, waited  # not 5 s after the restart (8 s or more)


async def test_a_wait_resumed_after_a_restart_sees_a_load_made_while_it_was_down(client, services, runtime) -> None:
    external, child = await _wait_graph(client, "loaded_while_down")
    run_id = (await (await client.post(f"/api/v1/tables/{external}/run", json={"descendants": True})).json())["id"]
    await _waiting(client, runtime, run_id, external)
    uri = await _upload(client, external, b"id\n1\n")
    await services.runner.stop()
    await _load(client, external, uri)
    await services.runner.start()
    run = await _run_done(client, run_id)
    assert run["status"] == "succeeded", run["tables"]


# ------------------------------------------------------------------------- delete after a crash
async def _ended_load(runtime, services, table_id: str, uri: str, generation: int) -> str:
    """A load recorded as ended (as if the runner died right after recording its end)."""
    job_id = load_job_id(table_id, uri, generation)
    config = JobConfig(kind="load", project="maestro-local", destination=f"maestro-local.ext.{table_id}",
                       source_uris=[uri], source_generations=[generation], source_format="CSV",
                       delete_source=True)
    await runtime.store.append(f"job-{job_id}", NO_STREAM, [
        JobPlanned(job_id=job_id, run_id=None, table_id=table_id, config=config),
        JobSucceeded(job_id=job_id, run_id=None, table_id=table_id, statistics=JobStatistics(output_rows=1)),
    ], ME)
    return job_id


@pytest.fixture
def preconditions(services, local_stack):
    """The runner's Cloud Storage through a proxy that answers 412 for a DELETE at a generation
    that is not the live one, as Google does (fake-gcs-server deletes whatever is there:
    tests/gcs_preconditions.py)."""
    with precondition_proxy(local_stack.gcs_endpoint) as (endpoint, proxy):
        plain = services.storage
        services.storage = storage.Client(
            project=local_stack.project, credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=endpoint),
        )
        try:
            yield proxy
        finally:
            services.storage = plain


async def test_sources_of_a_load_that_ended_before_a_crash_are_deleted_at_the_next_start(
    client, services, runtime, preconditions
) -> None:
    table_id = await _external(client, "crashed", format="csv")
    first = await _upload(client, table_id, b"id\n1\n")
    second = await _upload(client, table_id, b"id\n2\n")
    stats = [await stat_object(services.storage, uri) for uri in (first, second)]
    await services.runner.stop()
    deleted = await _ended_load(runtime, services, table_id, first, stats[0].generation)
    # The second was written over after it was loaded: its loaded generation is gone, a newer one lives.
    overwritten = await _ended_load(runtime, services, table_id, second, stats[1].generation)
    bucket = services.storage.bucket(BUCKET)
    await asyncio.to_thread(bucket.blob(second.split("/", 3)[3]).upload_from_string, b"id\n3\n")

    await services.runner.start()
    job = await _deleted(client, deleted)
    assert job["sources_deleted"] == {"uris": [first], "missing": [], "kept": [], "errors": {}}
    assert await stat_object(services.storage, first) is None
    job = await _deleted(client, overwritten)
    assert job["sources_deleted"] == {"uris": [second], "missing": [], "kept": [second], "errors": {}}
    assert await stat_object(services.storage, second) is not None  # not what was loaded: left in place
    assert preconditions.refused == [f"DELETE {second.split('/', 3)[3]}"]

    await services.runner.stop()
    await services.runner.start()  # nothing more to do: recorded once
    await asyncio.sleep(0.5)
    for job_id in (deleted, overwritten):
        assert await _count(runtime, "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'LoadSourceDeleted'",
                            f"job-{job_id}") == 1


async def test_a_job_by_id(client, services) -> None:
    resp = await client.get("/api/v1/jobs/no-such-job")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_a_deletion_that_cannot_happen_ends_in_its_event_with_the_reason(client, services, runtime) -> None:
    """A runner with no Cloud Storage client cannot delete: the load still ends, and its
    LoadSourceDeleted says why each source is still there (never a silent end)."""
    table_id = await _external(client, "no_storage", format="csv")
    uri = await _upload(client, table_id, b"id\n1\n")
    context = services.runner.imports
    services.runner.imports = dataclasses.replace(context, storage=lambda: None)
    try:
        job = await _deleted(client, await _load(client, table_id, uri))
    finally:
        services.runner.imports = context
    assert job["state"] == "succeeded"
    assert job["sources_deleted"]["errors"] == {
        uri: "not deleted: no Cloud Storage client in this runner: a load's sources cannot be deleted"}
    assert await stat_object(services.storage, uri) is not None


async def test_a_waiting_external_table_holds_no_worker(client, services, runtime, bq) -> None:
    """With one worker for the run, a table next to a waiting external table still runs at once."""
    _override(services, 6.0)
    try:
        freq = (await (await client.post("/api/v1/frequencies", json={"name": "waits_one", "period": 86400})).json())["id"]
        external = await _external(client, "lonely", dataset="waits1", format="csv")
        await client.patch(f"/api/v1/tables/{external}", json={"frequency_id": freq})
        resp = await client.post("/api/v1/tables", json={
            "dataset": "waits1", "name": "other", "query": "SELECT 1 AS x", "frequency_id": freq})
        other = (await resp.json())["id"]
        resp = await client.post("/api/v1/runs", json={"frequency_id": freq, "workers": 1})
        run_id = (await resp.json())["id"]
        await _waiting(client, runtime, run_id, external)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 4.0  # well before the wait's 6 s end
        while await runtime.pool.fetchval(
                "SELECT state FROM run_tables WHERE run_id = $1 AND table_id = $2", run_id, other) != "succeeded":
            assert loop.time() < deadline, "the other table waited for the external table's worker"
            await asyncio.sleep(0.05)
    finally:
        _override(services, None)

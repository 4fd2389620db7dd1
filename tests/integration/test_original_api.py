"""A client written for the original Maestro runs unchanged against us (issue 12, item 2).

The test plays that client (reference §9, ``pythonlib/maestro.py``) with plain HTTP as it makes
it -- ``requests``, ``X-Api-Token``, Go-style keys, integer ids formatted with ``%d``, a base URL
joined with ``urljoin`` -- against a real ``maestro serve`` on the local stack:

1. look a table up by ``dataset.name``, read it, its status and its BigQuery info;
2. wait for it: record ``LastOkRunEndAt``, poll ``/status`` (raising on ``Error``) until it moves;
3. fetch its extract files through the signed ``Extracts.URLs`` and read them as one CSV
   (gunzipped, keeping only the first file's header);
4. an external table: wait until a run marks it running, PUT the file to ``UploadURL`` as
   ``application/octet-stream``, POST ``load_external`` with ``fn`` = the URL's last path
   segment, and wait for ``LastOkRunEndAt`` to move.

And the same rules as our own routes: someone outside the table's group gets no upload URL and no
extract URLs, and may neither run nor load it.
"""

from __future__ import annotations

import gzip
import io
import json
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import pytest
import requests
from dateutil.parser import parse as timeparse
from served import Served, served

pytestmark = pytest.mark.slow
ROWS = 300


@pytest.fixture(scope="module")
def world(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with served(pg_admin_dsn, tmp_path_factory.mktemp("original")) as server:
        group = server.call("POST", "/api/v1/groups", {"name": "science"})
        group_id = group.get("id") or group["group_id"]
        tables = {
            "summary": server.call("POST", "/api/v1/tables", {
                "group_id": group_id, "dataset": "legacy", "name": "scores",
                "query": f"SELECT x AS id, x * 2 AS score FROM UNNEST(GENERATE_ARRAY(1, {ROWS})) AS x",
                "extract": {"format": "csv", "compression": "gzip"},
            }),
            "external": server.call("POST", "/api/v1/tables", {
                "group_id": group_id, "dataset": "legacy", "name": "uploads", "kind": "external",
                "external": {"format": "ndjson", "wait_timeout": 600},
            }),
        }
        yield {
            "server": server, "url": server.url + "/", "tables": tables,
            "member": server.service_token("sam", groups=(group_id,)),
            "outsider": server.service_token("olga"),
        }


class OriginalClient:
    """What the original client does, call for call (its own code is not ours to copy)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.headers = url, {"X-Api-Token": token}

    def get(self, path: str) -> requests.Response:
        return requests.get(urljoin(self.url, path), headers=self.headers, timeout=30)

    def table_id(self, name: str) -> int:
        found = self.get("table/%s/id" % name).json()["Id"]
        if not found:
            raise Exception("Table not found.")
        return found

    def status(self, table_id: int) -> dict:
        status = self.get("table/%d/status" % table_id).json()
        if status["Error"]:
            raise Exception(status["Error"])
        return status

    def wait_for_internal(self, table_id: int, previous: object, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while timeparse(self.status(table_id)["LastOkRunEndAt"]) <= previous:
            assert time.monotonic() < deadline, "LastOkRunEndAt never moved"
            time.sleep(0.3)

    def wait_for_external(self, table_id: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.status(table_id)["Status"] != "running":
            assert time.monotonic() < deadline, "the external table never started running"
            time.sleep(0.3)


def test_wait_fetch_and_read_a_summary_table(world: dict) -> None:
    client = OriginalClient(world["url"], world["member"])
    table_id = client.table_id("legacy.scores")
    assert isinstance(table_id, int)
    table = client.get("table/%d" % table_id).json()
    assert (table["Id"], table["Name"], table["Dataset"], table["ExternalTmout"]) == (table_id, "scores", "legacy", 0)
    assert table["Extract"] is True and table["Extracts"]["URLs"] == [] and table["Error"] == ""
    previous = timeparse(table["LastOkRunEndAt"])  # never run: Go's zero time, parseable
    assert previous.year == 1
    assert client.get("table/%d/bq_info" % table_id).json() is None  # not in BigQuery yet

    started = client.get("table/%d/run" % table_id)
    assert started.status_code == 200 and started.json()["bq_job_id"].startswith("maestro_query_")
    client.wait_for_internal(table_id, previous)

    table = client.get("table/%d" % table_id).json()
    urls = table["Extracts"]["URLs"]
    assert urls and all("X-Goog-Signature" in u for u in urls)
    lines: list[bytes] = []
    for i, url in enumerate(urls):  # every file's header but the first one's is skipped
        with gzip.GzipFile(fileobj=io.BytesIO(requests.get(url, timeout=30).content)) as gz:
            if i > 0:
                gz.readline()
            lines.extend(gz.readlines())
    assert lines[0] == b"id,score\n"
    assert sorted(int(line.split(b",")[0]) for line in lines[1:]) == list(range(1, ROWS + 1))

    fields = client.get("table/%d/bq_info" % table_id).json()["schema"]["fields"]
    assert [(f["name"], f["mode"]) for f in fields] == [("id", "NULLABLE"), ("score", "NULLABLE")]
    tables = client.get("tables").json()
    assert {t["Id"] for t in tables} >= {table_id} and all(isinstance(t["Id"], int) for t in tables)
    runs = client.get("runs?p=0").json()
    assert runs and {"Id", "FreqName", "TotalBytes", "StartTime", "EndTime"} <= set(runs[0])


def test_upload_and_load_an_external_table(world: dict) -> None:
    client = OriginalClient(world["url"], world["member"])
    table_id = client.table_id("legacy.uploads")
    table = client.get("table/%d" % table_id).json()
    assert table["ExternalTmout"] > 0 and table["ExternalFormat"] == "NEWLINE_DELIMITED_JSON"
    previous = timeparse(table["LastOkRunEndAt"])

    assert client.get("table/%d/run" % table_id).status_code == 200  # a run now waits for the upload
    client.wait_for_external(table_id)

    dest = client.get("table/%d" % table_id).json()["UploadURL"]
    without_args = dest.split("?")[0]
    filename = without_args[without_args.rfind("/") + 1:]
    rows = b"".join(json.dumps({"who": w, "n": n}).encode() + b"\n" for w, n in (("a", 1), ("b", 2)))
    put = requests.put(dest, data=rows, headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert put.status_code == 200, put.text
    loaded = requests.post(urljoin(world["url"], "table/%d/load_external" % table_id),
                           headers=client.headers, data={"fn": filename}, timeout=30)
    assert loaded.status_code == 200, loaded.text
    client.wait_for_internal(table_id, previous)

    fields = client.get("table/%d/bq_info" % table_id).json()["schema"]["fields"]
    assert sorted(f["name"] for f in fields) == ["n", "who"]
    assert client.get("table/%d/bq_info" % table_id).json()["numRows"] in ("2", 2)
    # The run that waited for the upload ended with the load.
    server: Served = world["server"]
    run_id = server.call("GET", f"/api/v1/tables/{table['MaestroId']}/status")["run_id"]
    deadline = time.monotonic() + 60
    while server.call("GET", f"/api/v1/runs/{run_id}")["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_the_rules_of_our_routes_apply(world: dict) -> None:
    outsider = OriginalClient(world["url"], world["outsider"])
    summary = outsider.table_id("legacy.scores")
    external = outsider.table_id("legacy.uploads")
    assert outsider.get("table/%d" % external).json()["UploadURL"] == ""  # not theirs to write
    assert outsider.get("table/%d" % summary).json()["Extracts"]["URLs"] == []  # not theirs to read
    refused = outsider.get("table/%d/run" % summary)
    assert refused.status_code == 403 and refused.json()["error"]["details"]["rule"] == "write"
    load = requests.post(urljoin(world["url"], "table/%d/load_external" % external),
                         headers=outsider.headers, data={"fn": "x.json"}, timeout=30)
    assert load.status_code == 403  # the original checked nothing here

    anonymous = requests.get(urljoin(world["url"], "table/%d/run" % summary), timeout=30)
    assert anonymous.status_code == 401
    assert outsider.get("table/999999999").status_code == 404
    assert outsider.get("table/legacy.nothing/id").json() == {"Id": None}
    assert outsider.get("table/not-a-name/id").json()["Id"] is None
    with pytest.raises(Exception, match="Table not found"):
        outsider.table_id("legacy.nothing")

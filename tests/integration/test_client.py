"""maestro-client (clients/python) against a real ``maestro serve`` on the local stack.

One server for the module: tables are created through the API as its bootstrap administrator;
the client then runs them, waits, downloads and streams their extracts, loads them into
PostgreSQL with the DDL it writes, uploads to an external table, and reads runs and costs --
sync and async. Bad input ends in the documented exceptions.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from served import Served, free_port, served

from maestro_client import (
    AsyncMaestro,
    AuthenticationFailed,
    ConnectionFailed,
    Maestro,
    MaestroClientError,
    NotFound,
    RetryPolicy,
    RunFailed,
)

pytestmark = pytest.mark.slow
ROWS = 2500


@pytest.fixture(scope="module")
def server(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(pg_admin_dsn, tmp_path_factory.mktemp("client")) as s:
        yield s


@pytest.fixture(scope="module")
def analysts(server: Served) -> dict:
    group = server.call("POST", "/api/v1/groups", {"name": "analysts"})
    group_id = group.get("id") or group["group_id"]
    return {"id": group_id, "token": server.service_token("ana", groups=(group_id,))}


def _create(server: Served, group_id: str, **spec) -> dict:
    return server.call("POST", "/api/v1/tables", {"group_id": group_id, **spec})


@pytest.fixture(scope="module")
def orders(server: Served, analysts: dict) -> dict:
    query = f"SELECT x AS id, CONCAT('order, \"', CAST(x AS STRING), '\"') AS note FROM UNNEST(GENERATE_ARRAY(1, {ROWS})) AS x"
    return _create(server, analysts["id"], dataset="client", name="orders", query=query,
                   extract={"format": "csv", "compression": "gzip"})


def test_run_wait_extract_reader_schema_and_ddl(server: Served, analysts: dict, orders: dict, tmp_path: Path) -> None:
    with Maestro(server.url, analysts["token"], poll=0.2, max_poll=1.0) as m:
        table = m.table("client.orders")
        assert isinstance(table.info.number, int) and table.id == orders["id"]
        assert m.table(table.info.number).id == table.id == m.table(table.id).id
        before = table.status()
        assert before.state == "idle" and before.last_ok_at is None
        assert table.extracts() is None

        run = table.run(wait=False)
        status = table.wait(timeout=120, after=before)
        assert status.state == "succeeded" and status.last_ok_at is not None
        assert m.run_status(run.id).status == "succeeded"
        assert [r.id for r in m.runs(limit=5)][0] == run.id

        extract = table.extracts()
        assert extract is not None and extract.files
        files = table.download(tmp_path / "files")
        assert [p.name for p in files] == [f.uri.rsplit("/", 1)[-1] for f in extract.files]
        assert all(gzip.open(p).readline().startswith(b"id,note") for p in files)

        rows = list(csv.reader(table.reader()))
        assert rows[0] == ["id", "note"]
        assert sorted(int(r[0]) for r in rows[1:]) == list(range(1, ROWS + 1))
        assert rows[1][1] == f'order, "{rows[1][0]}"'  # quotes and commas survive

        columns = table.schema()
        assert [(c.name, c.type) for c in columns] == [("id", "INTEGER"), ("note", "STRING")] or \
            [(c.name, c.type) for c in columns] == [("id", "INT64"), ("note", "STRING")]
        ddl = table.pg_create_table("public.orders_copy")
        asyncio.run(_load_into_postgres(server.dsn, ddl, table.reader()))


async def _load_into_postgres(dsn: str, ddl: str, reader: io.TextIOBase) -> None:
    """The DDL runs on real PostgreSQL and the joined CSV COPYs into it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(ddl)
        data = io.BytesIO(reader.read().encode())
        await conn.copy_to_table("orders_copy", source=data, format="csv", header=True)
        assert await conn.fetchval("SELECT count(*) FROM orders_copy") == ROWS
        assert await conn.fetchval("SELECT note FROM orders_copy WHERE id = 7") == 'order, "7"'
    finally:
        await conn.close()


def test_a_failing_table_raises_with_bigquery_error_and_location(server: Served, analysts: dict) -> None:
    _create(server, analysts["id"], dataset="client", name="broken", query="SELECT 1 AS a,\n  nosuchfunction(2) AS b")
    with Maestro(server.url, analysts["token"], poll=0.2, max_poll=1.0) as m:
        table = m.table("client.broken")
        with pytest.raises(RunFailed) as failed:
            table.run(wait=True, timeout=120)
        assert failed.value.error and "nosuchfunction" in failed.value.error.lower()
        assert failed.value.table == "client.broken" and failed.value.run_id, str(failed.value)
        assert failed.value.error.endswith("at [2:3]")  # BigQuery's way of naming the place
        assert (failed.value.line, failed.value.column) == (2, 3)
        assert "at line 2, column 3" in str(failed.value)
        status = table.status()
        assert status.state == "failed" and status.error == failed.value.error


def test_upload_to_an_external_table_and_wait_for_its_load(server: Served, analysts: dict, tmp_path: Path) -> None:
    _create(server, analysts["id"], dataset="client", name="partners", kind="external",
            external={"format": "csv", "skip_leading_rows": 1,
                      "schema": [{"name": "code", "type": "STRING"}, {"name": "n", "type": "INT64"}]})
    source = tmp_path / "partners.csv"
    source.write_text("code,n\nab,1\ncd,2\nef,3\n")
    with Maestro(server.url, analysts["token"], poll=0.2, max_poll=1.0) as m:
        table = m.table("client.partners")
        load = table.upload(source, timeout=120)
        assert load.state == "succeeded" and load.output_rows == 3
        assert [c.name for c in table.schema()] == ["code", "n"]
        assert table.status().state == "succeeded"
        assert "CREATE TABLE partners (\n    code text,\n    n bigint\n);" == table.pg_create_table("partners")
        with pytest.raises(MaestroClientError, match="only external tables"):
            m.table("client.orders").upload(source)


def test_async_flavour(server: Served, analysts: dict, orders: dict) -> None:
    async def go() -> None:
        async with AsyncMaestro(server.url, analysts["token"], poll=0.2, max_poll=1.0) as m:
            table = await m.table("client.orders")
            before = await table.status()
            run = await table.run(wait=True, timeout=120)
            assert run.status == "succeeded"
            after = await table.status()
            assert after.last_ok_at > before.last_ok_at
            lines = [line async for line in table.reader()]
            assert lines[0] == "id,note\n" and len(list(csv.reader(lines))) == ROWS + 1
            costs = await m.costs(by="table")
            assert any(i.key == table.id for i in costs.items)
            with pytest.raises(NotFound):
                await m.table("client.nothing_here")

    asyncio.run(go())


def test_bad_input_and_a_server_that_is_down(server: Served) -> None:
    with Maestro(server.url, "mae_wrong_token") as m, pytest.raises(AuthenticationFailed) as refused:
        m.table("client.orders")
    assert refused.value.status == 401 and refused.value.code == "unauthenticated"
    with Maestro(server.url, server.admin_token) as m, pytest.raises(NotFound, match="no table"):
        m.table(999_999_999)
    down = f"http://127.0.0.1:{free_port()}"
    with Maestro(down, "x", retry=RetryPolicy(attempts=3, backoff=0.01)) as m, \
            pytest.raises(ConnectionFailed, match="cannot connect"):
        m.runs()

"""Test fixtures: a real PostgreSQL for every test.

``MAESTRO_TEST_DATABASE_URL`` (any PostgreSQL >= 13, a database the tests may create databases
from) is used when set; otherwise one embedded server starts per session in a temporary directory.
Each test gets a fresh database cloned from a template migrated once (procrastinate's pattern),
so tests are isolated and fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from dsns import with_database

from maestro.adapters import embedded_pg, postgres
from maestro.events.store import EventStore

if TYPE_CHECKING:
    from aiohttp.test_utils import TestClient

    from maestro.adapters.localstack import LocalStack
    from maestro.runtime import Runtime
    from maestro.services import Services

TEMPLATE = f"maestro_tpl_{os.getpid()}"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    external = os.environ.get("MAESTRO_TEST_DATABASE_URL")
    if external:
        yield external
        return
    tmp = Path(tempfile.mkdtemp(prefix="maestro-test-pg-"))
    server = embedded_pg.start_embedded_sync(tmp / "pg", cleanup_mode="stop")
    try:
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg_admin_dsn: str) -> Iterator[str]:
    async def create() -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(pg_admin_dsn, TEMPLATE))
        try:
            await postgres.migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield TEMPLATE
    asyncio.run(drop())


@contextlib.asynccontextmanager
async def _database(admin_dsn: str, template: str | None = None) -> AsyncIterator[tuple[str, str]]:
    """A new database (cloned from ``template`` when given), dropped afterwards: (dsn, name)."""
    name = f"maestro_t_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clone}')
    finally:
        await admin.close()
    try:
        yield with_database(admin_dsn, name), name
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def fresh_database(pg_admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """An empty database (no migrations): (dsn, name)."""
    async with _database(pg_admin_dsn) as created:
        yield created


@pytest.fixture
async def dsn(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database cloned from the template."""
    async with _database(pg_admin_dsn, pg_template) as (created, _):
        yield created


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await postgres.create_pool(dsn, min_size=1, max_size=12)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def store(pool: asyncpg.Pool, dsn: str) -> AsyncIterator[EventStore]:
    store = EventStore(pool, listen_dsn=dsn, poll_interval=0.2)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def runtime(dsn: str, tmp_path: Path) -> AsyncIterator["Runtime"]:
    from maestro.runtime import open_runtime
    from maestro.settings import Settings

    settings = Settings(database_url=dsn, data_dir=tmp_path / "data", poll_interval=0.2, scheduler_tick=0.2)
    rt = await open_runtime(settings)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def client(runtime: "Runtime") -> AsyncIterator["TestClient"]:
    from aiohttp.test_utils import TestClient, TestServer

    from maestro.http.app import create_app

    from people import user_token

    token = await user_token(runtime, "admin-1", admin=True)  # a service user: admin, in no group
    app = create_app(runtime.settings, runtime=runtime)
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture
async def anon_client(runtime: "Runtime") -> AsyncIterator["TestClient"]:
    from aiohttp.test_utils import TestClient, TestServer

    from maestro.http.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator["LocalStack"]:
    """One local BigQuery + GCS for the whole session (starting one takes ~1.5 s)."""
    from maestro.adapters.localstack import start_local_stack_sync
    from maestro.settings import Settings

    settings = Settings()  # MAESTRO_LOCALBQ_VENV / MAESTRO_FAKE_GCS_SERVER, as the service reads them
    stack = start_local_stack_sync(
        tmp_path_factory.mktemp("localstack"), project="maestro-local",
        venv=settings.localbq_venv, fake_gcs_server=settings.fake_gcs_server,
    )
    try:
        yield stack
    finally:
        stack.stop_sync()


@pytest.fixture
async def services(runtime: "Runtime", local_stack: "LocalStack") -> AsyncIterator["Services"]:
    """The runtime with BigQuery, the runner and the scheduler running, on the shared stack."""
    from maestro.services import start_services

    svc = await start_services(runtime, stack=local_stack)
    for _ in range(200):
        if svc.is_leader:
            break
        await asyncio.sleep(0.01)
    try:
        yield svc
    finally:
        await svc.close()
        runtime.services = None

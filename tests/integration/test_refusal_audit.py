"""Refusals: counted rather than appended one by one, never dropped, and held against the real
client address behind trusted proxies.

Before: every 403 appended its own AccessDenied (with no limit, into an undeletable log), audit
appends were dropped after 5 conflicts, and X-Forwarded-For was never used, so behind a proxy
every client shared one failure budget.
"""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from people import bearer, user_token

from maestro.adapters import postgres
from maestro.events.auth import LoginDenied
from maestro.events.store import EventStore
from maestro.handlers.people.audit import AuditLog
from maestro.http.app import create_app


async def test_forbidden_requests_are_counted_per_user_route_and_minute(client, runtime) -> None:
    plain = bearer(await user_token(runtime, "paul"))
    before = await runtime.store.last_position()
    for _ in range(30):
        assert (await client.post("/api/v1/groups", json={"name": "x"}, headers=plain)).status == 403
    for name in ("a", "b"):
        assert (await client.patch(f"/api/v1/groups/{name}", json={"name": "y"}, headers=plain)).status == 403
    assert await runtime.store.read_all_raw(before, 100) == []  # nothing appended per request
    await runtime.audit.flush()
    denied = await runtime.audit.query(types=["AccessDenied"], after=before)
    assert sorted((e.data["route"], e.data["count"]) for e in denied) == [
        ("/api/v1/groups", 30), ("/api/v1/groups/{group_id}", 2),
    ]
    first = next(e for e in denied if e.data["count"] == 30)
    assert first.metadata["actor"] == "user:paul" and first.data["rule"] == "admin"
    assert first.data["first_at"] <= first.data["last_at"] and first.data["path"] == "/api/v1/groups"


async def test_counted_refusals_are_appended_on_shutdown(dsn, tmp_path) -> None:
    from maestro.runtime import open_runtime
    from maestro.settings import Settings

    runtime = await open_runtime(Settings(database_url=dsn, data_dir=tmp_path / "d"), follow=False)
    token = bearer(await user_token(runtime, "paul"))
    async with TestClient(TestServer(create_app(runtime.settings, runtime=runtime))) as c:
        for _ in range(3):
            assert (await c.get("/api/v1/users", headers=token)).status == 403
    await runtime.close()  # the minute is not over: close appends the count
    pool = await postgres.create_pool(dsn, min_size=1, max_size=2)
    try:
        rows = await pool.fetch("SELECT data->>'count' AS n FROM events WHERE type = 'AccessDenied'")
    finally:
        await pool.close()
    assert [r["n"] for r in rows] == ["3"]


async def test_audit_appends_never_conflict_and_survive_an_outage(runtime, dsn) -> None:
    # Two processes' audit logs, many refusals at once: every one lands (no shared stream to fight over).
    other = AuditLog(runtime.store)
    events = [LoginDenied(reason=f"r{i}") for i in range(60)]
    await asyncio.gather(*(log.record(e) for i, e in enumerate(events) for log in [(runtime.audit, other)[i % 2]]))
    assert len(await runtime.audit.query(types=["LoginDenied"])) == 60
    # The database away: the refusal is kept, not raised, not dropped; it lands once it is back.
    dead_pool = await postgres.create_pool(dsn, min_size=1, max_size=1)
    await dead_pool.close()
    away = AuditLog(EventStore(dead_pool))
    await away.record(LoginDenied(reason="while the database was away"))
    assert not await away.flush()
    away.store = runtime.store
    assert await away.flush()
    await away.close()
    reasons = [e.data["reason"] for e in await runtime.audit.query(types=["LoginDenied"])]
    assert reasons.count("while the database was away") == 1


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(runtime) -> None:
    good = bearer(await user_token(runtime, "gus"))
    bad = bearer("mae_bad_guess")
    tight = {"auth_failure_burst": 2, "auth_failures_per_minute": 1}

    def via(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": f"10.9.9.9, {address}"}  # the left part is the client's to forge

    trusting = runtime.settings.model_copy(update={**tight, "trusted_proxies": ["127.0.0.0/8"]})
    async with TestClient(TestServer(create_app(trusting, runtime=runtime))) as c:
        for _ in range(2):
            assert (await c.get("/api/v1/me", headers={**bad, **via("203.0.113.5")})).status == 401
        assert (await c.get("/api/v1/me", headers={**bad, **via("203.0.113.5")})).status == 429
        assert (await c.get("/api/v1/me", headers={**bad, **via("198.51.100.7")})).status == 401  # another client
        assert (await c.get("/api/v1/me", headers={**good, **via("203.0.113.5")})).status == 200
    addresses = [e.data["address"] for e in await runtime.audit.query(types=["TokenRejected"])]
    assert addresses == ["203.0.113.5", "203.0.113.5", "198.51.100.7"]

    # Not from a trusted proxy: the header is anyone's to write, so it changes nothing.
    plain = runtime.settings.model_copy(update=tight)
    async with TestClient(TestServer(create_app(plain, runtime=runtime))) as c:
        for i in range(2):
            assert (await c.get("/api/v1/me", headers={**bad, **via(f"192.0.2.{i}")})).status == 401
        assert (await c.get("/api/v1/me", headers={**bad, **via("192.0.2.99")})).status == 429
    addresses = [e.data["address"] for e in await runtime.audit.query(types=["TokenRejected"])]
    assert addresses[3:] == ["127.0.0.1", "127.0.0.1"]


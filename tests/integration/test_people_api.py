"""Users, groups, API tokens, the audit trail and the failed-attempt limit, through the HTTP API."""

from __future__ import annotations

import datetime as dt

from people import TESTS, bearer, user_token

from maestro.events.catalog import TableSpec
from maestro.http.app import create_app


async def test_promotions_are_answerable_from_the_audit_trail(client, runtime) -> None:
    await user_token(runtime, "ann")
    resp = await client.patch("/api/v1/users/ann", json={"admin": True})
    assert resp.status == 200 and (await resp.json())["admin"] is True
    resp = await client.patch("/api/v1/users/ann", json={"admin": True})  # already: no second event
    assert resp.status == 200
    resp = await client.patch("/api/v1/users/ann", json={"enabled": False, "admin": False})
    assert (await resp.json()) | {"created_at": None} == {
        "id": "ann", "kind": "service", "email": None, "name": "ann", "enabled": False, "admin": False,
        "groups": [], "created_at": None,
    }
    # Who granted whom admin, when:
    resp = await client.get("/api/v1/audit", params={"type": "UserPromoted,UserDemoted"})
    events = (await resp.json())["events"]
    assert [(e["type"], e["data"]["user_id"], e["metadata"]["actor"]) for e in events] == [
        ("UserPromoted", "ann", "user:admin-1"), ("UserDemoted", "ann", "user:admin-1"),
    ]
    assert all(dt.datetime.fromisoformat(e["occurred_at"]) for e in events)
    resp = await client.get("/api/v1/audit", params={"actor": "admin-1", "type": "UserDisabled"})
    assert [e["data"] for e in (await resp.json())["events"]] == [{"user_id": "ann"}]

    resp = await client.patch("/api/v1/users/admin-1", json={"admin": False})
    assert resp.status == 409 and "yourself" in (await resp.json())["error"]["message"]
    for bad in ({}, {"admin": "yes"}, {"owner": True}):
        assert (await client.patch("/api/v1/users/ann", json=bad)).status == 422
    assert (await client.patch("/api/v1/users/nobody", json={"enabled": True})).status == 404
    users = (await (await client.get("/api/v1/users")).json())["users"]
    assert {u["id"] for u in users} == {"admin-1", "ann"}


async def test_groups_and_members(client, runtime) -> None:
    await user_token(runtime, "bo")
    resp = await client.post("/api/v1/groups", json={"name": "Finance"})
    assert resp.status == 201
    finance = (await resp.json())["id"]
    assert (await client.post("/api/v1/groups", json={"name": "finance"})).status == 409  # case-insensitive
    assert (await client.post("/api/v1/groups", json={"name": " padded"})).status == 422
    resp = await client.post(f"/api/v1/groups/{finance}/members/bo")
    assert (await resp.json())["members"] == ["bo"]
    assert (await client.post(f"/api/v1/groups/{finance}/members/nobody")).status == 404
    resp = await client.patch(f"/api/v1/groups/{finance}", json={"name": "Money"})
    assert (await resp.json())["name"] == "Money"
    me = await (await client.get("/api/v1/me")).json()
    assert me["id"] == "admin-1" and me["via"] == "token" and "csrf_token" not in me

    # A group with tables, live or deleted, cannot be deleted.
    view = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name="t", query="SELECT 1", group_id=finance), TESTS
    )
    await runtime.catalog.delete_table(view.table_id, TESTS)
    resp = await client.delete(f"/api/v1/groups/{finance}")
    assert resp.status == 409 and "1 table" in (await resp.json())["error"]["message"]
    await runtime.catalog.restore_table(view.table_id, TESTS)
    await runtime.catalog.update_table(view.table_id, {"group_id": None}, TESTS)
    assert (await client.delete(f"/api/v1/groups/{finance}/members/bo")).status == 200
    assert (await client.delete(f"/api/v1/groups/{finance}/members/bo")).status == 404
    assert (await client.delete(f"/api/v1/groups/{finance}")).status == 204
    assert (await (await client.get("/api/v1/groups")).json())["groups"] == []


async def test_members_write_their_group_tables_only(client, anon_client, runtime) -> None:
    group = await runtime.users.create_group("analysts", TESTS)
    other = await runtime.users.create_group("others", TESTS)
    mia = bearer(await user_token(runtime, "mia", groups=(group.group_id,)))
    resp = await anon_client.post("/api/v1/tables", headers=mia, json={"dataset": "ds", "name": "a", "query": "SELECT 1"})
    assert resp.status == 201, await resp.text()
    table = await resp.json()
    assert (table["owner_id"], table["group_id"]) == ("mia", group.group_id)  # defaults: creator, first group
    url = f"/api/v1/tables/{table['id']}"
    assert (await anon_client.patch(url, headers=mia, json={"description": "mine"})).status == 200
    for body, why in [
        ({"group_id": other.group_id}, "not a member of group"),
        ({"group_id": None}, "out of its group"),
        ({"owner_id": "someone"}, "someone else"),
    ]:
        resp = await anon_client.patch(url, headers=mia, json=body)
        assert resp.status == 403 and why in (await resp.json())["error"]["message"], body
    resp = await anon_client.post("/api/v1/tables", headers=mia,
                                  json={"dataset": "ds", "name": "b", "query": "SELECT 1", "group_id": other.group_id})
    assert resp.status == 403
    # Replacing the definition keeps the group and owner unless the body names them.
    resp = await anon_client.put(url, headers=mia, json={"dataset": "ds", "name": "a", "query": "SELECT 2"})
    assert resp.status == 200 and ((await resp.json())["group_id"], (await resp.json())["owner_id"]) == (group.group_id, "mia")
    # Running "with descendants" runs other groups' tables too: not for a member of one group.
    resp = await client.post("/api/v1/tables", json={"dataset": "ds", "name": "down", "query": "SELECT * FROM ds.a",
                                                     "group_id": other.group_id})
    assert resp.status == 201
    resp = await anon_client.post(f"{url}/run", headers=mia, json={"descendants": True})
    assert resp.status == 403 and other.group_id in (await resp.json())["error"]["message"]
    resp = await anon_client.post(f"{url}/run", headers=mia, json={"descendants": False})
    assert resp.status not in (401, 403)
    # An administrator moves it; from then on the member may not touch it.
    assert (await client.patch(url, json={"group_id": other.group_id})).status == 200
    resp = await anon_client.delete(url, headers=mia)
    assert resp.status == 403 and (await resp.json())["error"]["details"] == {"rule": "write"}
    resp = await client.patch(url, json={"group_id": "no-such-group"})
    assert resp.status == 422


async def test_tokens_api(client, anon_client, runtime) -> None:
    resp = await client.post("/api/v1/tokens", json={"name": "laptop", "expires_at": "2099-01-01T00:00:00Z"})
    assert resp.status == 201
    created = await resp.json()
    token = created.pop("token")
    assert token.startswith(f"mae_{created['id']}_") and created["user_id"] == "admin-1"
    listed = (await (await client.get("/api/v1/tokens")).json())["tokens"]
    assert created["id"] in {t["id"] for t in listed} and all("token" not in t for t in listed)
    # Only its hash is stored (the secret may itself hold "_": take all of it after the id).
    secret = token.removeprefix(f"mae_{created['id']}_")
    assert len(secret) >= 20 and secret not in str(await runtime.store.read_all_raw(0, 1000))

    # Last use: recorded on use, at most once a minute, not as an event.
    before = await runtime.store.last_position()
    for _ in range(3):
        assert (await anon_client.get("/api/v1/me", headers=bearer(token))).status == 200
    assert await runtime.store.last_position() == before
    info = await runtime.tokens.get(created["id"])
    assert info.last_used_at is not None

    # Someone else's token is not found for a plain user; an administrator may revoke it.
    ann = bearer(await user_token(runtime, "ann"))
    resp = await anon_client.delete(f"/api/v1/tokens/{created['id']}", headers=ann)
    assert resp.status == 404
    assert (await anon_client.get("/api/v1/tokens", headers=ann, params={"all": "true"})).status == 422
    ann_tokens = (await (await anon_client.get("/api/v1/tokens", headers=ann)).json())["tokens"]
    assert [t["user_id"] for t in ann_tokens] == ["ann"]
    assert (await client.delete(f"/api/v1/tokens/{ann_tokens[0]['id']}")).status == 204
    assert (await anon_client.get("/api/v1/me", headers=ann)).status == 401
    assert (await client.delete(f"/api/v1/tokens/{created['id']}")).status == 204
    assert (await anon_client.get("/api/v1/me", headers=bearer(token))).status == 401

    for bad in ({"name": ""}, {"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, {"name": "x", "expires_at": "2099-01-01T00:00:00"}):
        assert (await client.post("/api/v1/tokens", json=bad)).status == 422, bad


async def test_wrong_expired_revoked_malformed_tokens_share_one_401(anon_client, runtime) -> None:
    good = await user_token(runtime, "eve")
    token_id = good.split("_")[1]
    expired_id, expired = await runtime.tokens.create("eve", "old", TESTS, expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    await runtime.store.pool.execute("UPDATE auth_tokens SET expires_at = now() - interval '1 s' WHERE token_id = $1", expired_id)
    revoked = await user_token(runtime, "eve")
    await runtime.tokens.revoke(revoked.split("_")[1], TESTS)
    messages = set()
    for headers in (
        bearer(good[:-1] + ("A" if good[-1] != "A" else "B")), bearer(expired), bearer(revoked),
        bearer("mae_nope"), bearer(""), {"Authorization": "Basic abc"}, {"X-Api-Token": f"mae_{token_id}_x"},
    ):
        resp = await anon_client.get("/api/v1/tables", headers=headers)
        assert resp.status == 401, headers
        messages.add((await resp.json())["error"]["message"])
    assert messages == {"invalid or expired API token"}
    reasons = [e.data["reason"] for e in await runtime.audit.query(types=["TokenRejected"])]
    assert reasons[:3] == ["unknown token or wrong secret", "expired", "revoked"]


async def test_failed_attempts_are_rate_limited_per_address(runtime) -> None:
    """Before: once an address had failed 20 times, its valid credentials got 429 too (behind a
    proxy, one guesser locked everyone out)."""
    from aiohttp.test_utils import TestClient, TestServer

    settings = runtime.settings.model_copy(update={"auth_failure_burst": 3, "auth_failures_per_minute": 6})
    good = bearer(await user_token(runtime, "gus"))
    before = await runtime.store.last_position()
    async with TestClient(TestServer(create_app(settings, runtime=runtime))) as c:
        for _ in range(3):
            assert (await c.get("/api/v1/me", headers=bearer("mae_bad_guess"))).status == 401
        resp = await c.get("/api/v1/me", headers=bearer("mae_bad_guess"))
        assert resp.status == 429 and resp.headers["Retry-After"] == "10"
        assert (await resp.json())["error"]["code"] == "too_many_requests"
        # A valid token always passes: the budget is for failures, not for the address.
        for _ in range(3):
            assert (await c.get("/api/v1/me", headers=good)).status == 200
        assert (await c.get("/api/v1/me")).status == 429  # no credentials: would fail
        assert (await c.get("/healthz")).status == 200  # public routes are unaffected
    rejected = await runtime.audit.query(types=["TokenRejected"])
    assert len(rejected) == 3  # attempts within the budget, one by one
    await runtime.audit.flush()
    throttled = await runtime.audit.query(types=["AuthenticationThrottled"])
    assert [(e.data["address"], e.data["count"]) for e in throttled] == [("127.0.0.1", 2)]  # the 4th guess, the credential-less call
    assert {e.type for e in await runtime.store.read_all_raw(before, 100)} == {"TokenRejected", "AuthenticationThrottled"}

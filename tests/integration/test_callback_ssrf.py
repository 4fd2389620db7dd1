"""Callback destinations: refused at save (422, no event) and again at send time."""

from __future__ import annotations

import pytest

from maestro.adapters.webhooks import WebhookClient, address_problem, parse_networks, signed_headers
from webhook_receiver import Receiver


def _table(url: str) -> dict:
    return {"dataset": "ssrf", "name": "t", "query": "SELECT 1 AS x",
            "extract": {"format": "csv", "compression": "none", "notify_url": url}}


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook",          # loopback (not in this runtime's allow-list)
    "http://localhost:9/hook",          # a name that resolves to loopback
    "http://10.1.2.3/hook",             # private
    "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data",  # link-local: the cloud metadata service
    "http://[::1]:9/hook",
    "http://[::ffff:127.0.0.1]/hook",   # IPv4-mapped loopback
    "http://100.64.0.1/hook",           # carrier-grade NAT: not globally routable
    "http://0.0.0.0/hook",
    "http://[64:ff9b::a00:1]/hook",     # NAT64 to 10.0.0.1
    "http://[2002:7f00:1::]/hook",      # 6to4 of 127.0.0.1
    "http://[::127.0.0.1]/hook",        # IPv4-compatible loopback
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
    "http://2130706433/hook",           # 127.0.0.1 as one number
    "http://2852039166/latest/meta-data",  # 169.254.169.254 as one number
    "http://127.1/hook",                # short form
    "http://0177.0.0.1/hook",           # octal
    "http://0x7f.0.0.1/hook",           # hexadecimal
])
async def test_a_destination_not_allowed_is_refused_at_save_with_no_event(client, runtime, url) -> None:
    before = await runtime.store.last_position()
    resp = await client.post("/api/v1/tables", json=_table(url))
    body = await resp.json()
    assert resp.status == 422, body
    assert body["error"]["code"] == "callback_url_refused"
    message = body["error"]["message"]
    assert "callback_allowed_networks" in message or "not a canonical IPv4 address" in message, message
    assert await runtime.store.last_position() == before


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/"])
async def test_a_url_that_is_not_http_is_refused(client, runtime, url) -> None:
    before = await runtime.store.last_position()
    resp = await client.post("/api/v1/tables", json=_table(url))
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "validation_failed"
    assert await runtime.store.last_position() == before


async def test_edits_are_checked_too(client, runtime) -> None:
    created = await client.post("/api/v1/tables", json={"dataset": "ssrf", "name": "e", "query": "SELECT 1 AS x"})
    table_id = (await created.json())["id"]
    before = await runtime.store.last_position()
    patch = await client.patch(f"/api/v1/tables/{table_id}", json={"extract": {"notify_url": "http://10.0.0.1/x"}})
    assert patch.status == 422 and (await patch.json())["error"]["code"] == "callback_url_refused"
    put = await client.put(f"/api/v1/tables/{table_id}", json=_table("http://172.16.0.1/x") | {"name": "e"})
    assert put.status == 422 and (await put.json())["error"]["code"] == "callback_url_refused"
    assert await runtime.store.last_position() == before


async def test_a_name_that_does_not_resolve_now_is_saved_with_a_warning(client) -> None:
    resp = await client.post("/api/v1/tables", json=_table("https://callbacks.maestro.invalid/hook"))
    body = await resp.json()
    assert resp.status == 201, body
    assert any("does not resolve now" in w for w in body["warnings"])
    assert body["callback"]["secret"].startswith("whsec_")


def test_address_rules() -> None:
    allowed = parse_networks(["127.0.0.1", "10.9.0.0/16"])
    assert address_problem("8.8.8.8", ()) is None
    assert address_problem("2001:4860:4860::8888", ()) is None
    assert address_problem("127.0.0.1", allowed) is None
    assert address_problem("10.9.3.4", allowed) is None
    assert "loopback" in address_problem("127.0.0.2", allowed)
    assert "private" in address_problem("10.8.0.1", allowed)
    assert "link-local" in address_problem("fe80::1%eth0", ())
    assert "loopback" in address_problem("::ffff:127.0.0.1", ())
    assert address_problem("224.0.0.1", ()) is not None
    # IPv4 inside IPv6 is judged by the IPv4 address it leads to.
    assert "private" in address_problem("64:ff9b::a00:5", ())
    assert "loopback" in address_problem("2002:7f00:1::", ())
    assert "loopback" in address_problem("::127.0.0.1", ())
    assert address_problem("2001:0:4136:e378:8000:63bf:3fff:fdd2", ()) is not None  # Teredo
    assert address_problem("64:ff9b:1::a00:1", ()) is not None  # a local NAT64 translator
    assert address_problem("64:ff9b::808:808", ()) is None  # NAT64 to 8.8.8.8
    assert address_problem("2002:808:808::1", ()) is None  # 6to4 of 8.8.8.8
    assert address_problem("64:ff9b::7f00:1", allowed) is None  # 127.0.0.1 is allowed here
    assert address_problem("::", ()) is not None and address_problem("::1", ()) is not None


async def test_send_time_checks_every_resolved_address() -> None:
    receiver = await Receiver().start()
    try:
        body = b'{"x": 1}'
        headers = signed_headers("whsec_" + "A" * 44, "msg_1", body.decode())
        closed = WebhookClient(())
        numeric = receiver.url.replace("127.0.0.1", "2130706433")
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost"), numeric):
            result = await closed.post(url, body, headers, timeout=2)
            assert result.refused is not None and result.status is None, result
        await closed.close()
        assert receiver.received == []  # nothing left the process
        opened = WebhookClient(parse_networks(["127.0.0.1"]))
        result = await opened.post(receiver.url.replace("127.0.0.1", "localhost"), body, headers, timeout=2)
        assert result.status == 200 and result.refused is None, result  # only the checked address is used
        await opened.close()
        assert len(receiver.received) == 1
        # Even where 127.0.0.1 is allowed, a non-canonical form of it is refused, not sent.
        result = await opened.post(numeric.replace("2130706433", "127.1"), body, headers, timeout=2)
        assert result.refused is not None and "canonical" in result.refused, result
        await opened.close()
        assert len(receiver.received) == 1
    finally:
        await receiver.stop()


async def test_an_endless_answer_is_not_read_past_a_bound() -> None:
    """The answer's body is not used: at most 64 KiB of it is read, so a receiver that streams
    without end can neither exhaust memory nor hold the attempt until its timeout."""
    receiver = await Receiver(plan=[("endless", 200), 200]).start()
    try:
        body = b'{"x": 1}'
        headers = signed_headers("whsec_" + "A" * 44, "msg_1", body.decode())
        client = WebhookClient(parse_networks(["127.0.0.1"]))
        try:
            result = await client.post(receiver.url, body, headers, timeout=5)
            assert result.status == 200 and result.error is None, result
            # The unfinished connection was not pooled: the next request works on a new one.
            again = await client.post(receiver.url, body, headers, timeout=5)
            assert again.status == 200, again
        finally:
            await client.close()
        assert len(receiver.received) == 2
    finally:
        await receiver.stop()

"""Pure parts of authentication: the failure limiter, redirect targets, CSRF tokens, user ids."""

from __future__ import annotations

import doctest

import pytest

from maestro.events.users import user_id_for
from maestro.handlers.people import sessions
from maestro.http import login, ratelimit
from maestro.http.ratelimit import FailureLimiter


def test_docstring_examples() -> None:
    for module in (ratelimit, login):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_limiter_refills_and_keeps_addresses_apart() -> None:
    clock = [0.0]
    limiter = FailureLimiter(burst=3, per_minute=60, clock=lambda: clock[0])
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.failed("a")
    assert limiter.retry_after("a") == 1 and limiter.retry_after("b") is None
    clock[0] = 2.5
    assert limiter.retry_after("a") is None  # 2.5 tokens back
    limiter.failed("a"); limiter.failed("a")
    assert limiter.retry_after("a") == 1  # 0.5 left: the next token in half a second, rounded up


def test_limiter_memory_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(ratelimit, "_MAX_KEYS", 100)
    clock = [0.0]
    limiter = FailureLimiter(burst=1, per_minute=1, clock=lambda: clock[0])
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 100
    assert limiter.retry_after("10.0.3.231") is not None  # the most recent attackers are still held


def test_csrf_token_is_bound_to_the_session_secret() -> None:
    cookie = "abc.secret-one"
    assert sessions.csrf_matches(cookie, sessions.csrf_token(cookie))
    assert not sessions.csrf_matches("abc.secret-two", sessions.csrf_token(cookie))
    assert not sessions.csrf_matches(cookie, None) and not sessions.csrf_matches(cookie, "")
    assert sessions.csrf_token(cookie) != sessions.secret_hash("secret-one")  # not the logged hash
    assert [sessions.session_id_of(c) for c in ("abc.x", "abc.", ".x", "abc", "a" * 65 + ".x")] == [
        "abc", None, None, None, None,
    ]


def test_user_ids_derive_from_issuer_and_subject() -> None:
    a = user_id_for("https://accounts.google.com", "123")
    assert a == user_id_for("https://accounts.google.com/", "123") and a.startswith("u") and len(a) == 16
    assert a != user_id_for("https://login.example.com", "123")
    assert a != user_id_for("https://accounts.google.com", "1234")


def test_client_address_behind_trusted_proxies() -> None:
    from maestro.http import forwarded

    assert doctest.testmod(forwarded).failed == 0
    nets = forwarded.parse_networks(["10.0.0.0/8", "2001:db8::/32"])
    assert forwarded.client_address("::ffff:10.0.0.1", ["198.51.100.7"], nets) == "198.51.100.7"  # IPv4-mapped peer
    assert forwarded.client_address("2001:db8::1", ["2001:db8::2, 2001:db8:1::9"], nets) == "2001:db8::2"
    assert forwarded.client_address("10.0.0.1", [], nets) == "10.0.0.1"  # a proxy that forwarded nothing
    assert forwarded.client_address(None, ["1.2.3.4"], nets) == "unknown"
    with pytest.raises(ValueError, match="'nope'"):
        forwarded.parse_networks(["nope"])

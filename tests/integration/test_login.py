"""Login end to end: a browser (aiohttp client with a cookie jar) against Maestro and a real local
OpenID Connect provider, following every redirect; then sessions, CSRF, logout, disabling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from oidc_provider import Knobs, LocalOidcProvider, OidcUser
from people import TESTS, bearer, user_token
from pydantic import SecretStr

from maestro.handlers.people.login import OAuthClientConfig, oauth_from_settings
from maestro.http.app import create_app
from maestro.http.auth import LIMITER

SESSION, CSRF, LOGIN = "__Host-maestro_session", "__Host-maestro_csrf", "__Host-maestro_login"
ANA = OidcUser(sub="sub-ana", email="ana@example.com", name="Ana")
BOB = OidcUser(sub="sub-bob", email="bob@example.com", name="Bob")


@dataclass
class Site:
    server: TestServer
    provider: LocalOidcProvider
    runtime: object

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def configure(self, **changes: object) -> None:
        values = dict(
            issuer=self.provider.issuer, client_id=self.provider.client_id,
            client_secret=SecretStr(self.provider.client_secret), redirect_uri=self.url("/auth/callback"),
            allowed_domains=("example.com",), auto_enable_domains=(), initial_admins=("ana@example.com",),
        )
        values.update(changes)
        self.runtime.login.source = lambda: OAuthClientConfig(**values)  # type: ignore[attr-defined]

    def browser(self) -> aiohttp.ClientSession:
        # Like a browser, the jar treats this loopback origin as secure, so Secure cookies flow.
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[self.url("/")])
        return aiohttp.ClientSession(cookie_jar=jar)


@pytest.fixture
async def site(runtime) -> AsyncIterator[Site]:
    async with LocalOidcProvider() as provider:
        server = TestServer(create_app(runtime.settings, runtime=runtime))
        await server.start_server()
        try:
            s = Site(server, provider, runtime)
            s.configure()
            yield s
        finally:
            await server.close()


async def log_in(site: Site, browser: aiohttp.ClientSession, user: OidcUser, start: str = "/login") -> list:
    """Follow redirects from ``start`` like a browser; return the responses (status, location, headers)."""
    site.provider.user = user
    url, hops = site.url(start), []
    for _ in range(10):
        async with browser.get(url, allow_redirects=False) as resp:
            hops.append((resp.status, resp.headers.get("Location"), resp.headers, await resp.read()))
            if resp.status not in (301, 302, 303) or not resp.headers["Location"].startswith(("http", "/")):
                return hops
            target = urljoin(url, resp.headers["Location"])
            if urlsplit(target).netloc == urlsplit(site.url("/")).netloc and urlsplit(target).path not in (
                "/login", "/auth/callback"
            ):
                return hops  # back home: the redirect after login
            url = target
    raise AssertionError("too many redirects")


def cookies(browser: aiohttp.ClientSession) -> dict[str, str]:
    return {c.key: c.value for c in browser.cookie_jar}


async def test_initial_admin_is_admin_then_session_csrf_and_logout(site: Site) -> None:
    async with site.browser() as browser:
        hops = await log_in(site, browser, ANA, "/login?return_to=/tables%3Fq%3Dx")
        # Maestro -> provider (PKCE, state, nonce) -> Maestro's callback -> where the user was going.
        authorize = parse_qs(urlsplit(hops[0][1]).query)
        assert hops[0][1].startswith(site.provider.issuer + "/authorize")
        assert {"state", "nonce", "code_challenge"} <= authorize.keys() and authorize["code_challenge_method"] == ["S256"]
        assert hops[-1][:2] == (302, "/tables?q=x")
        set_cookies = hops[-1][2].getall("Set-Cookie")
        session_header = next(h for h in set_cookies if h.startswith(SESSION + "="))
        assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= {p.strip() for p in session_header.split(";")}
        csrf_header = next(h for h in set_cookies if h.startswith(CSRF + "="))
        assert "HttpOnly" not in csrf_header and "Secure" in csrf_header
        jar = cookies(browser)
        assert jar.get(LOGIN, "") == ""  # the pending-login cookie is spent

        async with browser.get(site.url("/api/v1/me")) as resp:
            me = await resp.json()
        assert resp.status == 200, me
        assert me["admin"] and me["enabled"] and me["email"] == "ana@example.com" and me["via"] == "session"
        assert me["groups"] == ["default"] and me["csrf_token"] == jar[CSRF]

        # A cookie-authenticated write needs the CSRF header (another site cannot send it).
        async with browser.post(site.url("/api/v1/groups"), json={"name": "analysts"}) as resp:
            body = await resp.json()
        assert resp.status == 403 and body["error"]["details"]["rule"] == "csrf"
        async with browser.post(site.url("/api/v1/groups"), json={"name": "analysts"},
                                headers={"X-CSRF-Token": "f" * 64}) as resp:
            assert resp.status == 403
        async with browser.post(site.url("/api/v1/groups"), json={"name": "analysts"},
                                headers={"X-CSRF-Token": jar[CSRF]}) as resp:
            assert resp.status == 201, await resp.text()

        session_cookie = jar[SESSION]
        async with browser.post(site.url("/logout"), headers={"X-CSRF-Token": jar[CSRF]}) as resp:
            assert resp.status == 204
        assert cookies(browser).get(SESSION, "") == ""
    # The old cookie, replayed after logout, is refused.
    async with aiohttp.ClientSession() as attacker:
        async with attacker.get(site.url("/api/v1/me"), headers={"Cookie": f"{SESSION}={session_cookie}"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["message"] == "invalid or expired session: log in again"

    events = await site.runtime.store.read_all_raw(0, 1000)  # type: ignore[attr-defined]
    kinds = [(e.type, e.metadata["actor"]) for e in events]
    user_id = me["id"]
    assert ("UserSignedUp", "system:initial-admins") in kinds and ("GroupCreated", "system:initial-admins") in kinds
    assert ("SessionStarted", f"user:{user_id}") in kinds and ("SessionEnded", f"user:{user_id}") in kinds
    started = next(e for e in events if e.type == "SessionStarted")
    assert session_cookie.split(".")[1] not in str([e.to_dict() for e in events])  # only its hash
    assert started.data["secret_hash"] and started.data["user_id"] == user_id


async def test_only_the_configured_initial_admins_become_admin(site: Site) -> None:
    """Before: whoever logged in first became an administrator, even with an administrator
    (the bootstrap one) already there."""
    runtime = site.runtime
    await runtime.tokens.bootstrap(runtime.settings.data_dir)  # type: ignore[attr-defined]
    site.configure(auto_enable_domains=("example.com",), initial_admins=("Ana@Example.com",))
    async with site.browser() as browser:
        assert (await log_in(site, browser, BOB))[-1][:2] == (302, "/")  # first, but not named
        async with browser.get(site.url("/api/v1/me")) as resp:
            bob = await resp.json()
    assert bob["enabled"] and not bob["admin"] and bob["groups"] == []
    async with site.browser() as browser:
        await log_in(site, browser, ANA)  # second, and named: an administrator
        async with browser.get(site.url("/api/v1/me")) as resp:
            ana = await resp.json()
    assert ana["admin"] and ana["enabled"] and ana["groups"] == ["default"]
    # The same address under another subject (an email given to someone new) is nobody's admin.
    async with site.browser() as browser:
        await log_in(site, browser, OidcUser(sub="sub-ana-2", email="ana@example.com", name="Ana 2"))
        async with browser.get(site.url("/api/v1/me")) as resp:
            heir = await resp.json()
    assert heir["id"] != ana["id"] and not heir["admin"]
    # With no initial administrators configured nobody becomes one by logging in.
    site.configure(auto_enable_domains=("example.com",), initial_admins=())
    async with site.browser() as browser:
        await log_in(site, browser, OidcUser(sub="sub-cy", email="cy@example.com"))
    admins = {u.email for u in await runtime.users.list() if u.admin}  # type: ignore[attr-defined]
    assert admins == {None, "ana@example.com"}  # the bootstrap service user, and Ana


async def test_later_users_start_disabled_until_enabled(site: Site) -> None:
    async with site.browser() as browser:
        await log_in(site, browser, ANA)
    async with site.browser() as browser:
        hops = await log_in(site, browser, BOB)
        assert hops[-1][0] == 403
        assert b"waiting for an administrator" in hops[-1][3]
        assert cookies(browser).get(SESSION) is None
    runtime = site.runtime
    bob = next(u for u in await runtime.users.list() if u.email == "bob@example.com")  # type: ignore[attr-defined]
    assert not bob.enabled and not bob.admin
    await runtime.users.change(bob.user_id, TESTS, enabled=True)  # type: ignore[attr-defined]
    async with site.browser() as browser:
        hops = await log_in(site, browser, BOB)
        assert hops[-1][:2] == (302, "/")
        async with browser.get(site.url("/api/v1/me")) as resp:
            me = await resp.json()
        assert me["enabled"] and not me["admin"] and me["groups"] == []
        # Disabled: the very next request with the same session is refused.
        await runtime.users.change(bob.user_id, TESTS, enabled=False)  # type: ignore[attr-defined]
        async with browser.get(site.url("/api/v1/me")) as resp:
            assert resp.status == 401
    denied = await runtime.audit.query(types=["LoginDenied"])  # type: ignore[attr-defined]
    assert [e.data["email"] for e in denied] == ["bob@example.com"]
    assert denied[0].metadata["actor"] == f"user:{bob.user_id}"


async def test_auto_enable_domains_and_exact_domain_match(site: Site) -> None:
    site.configure(allowed_domains=("example.com", "partner.org"), auto_enable_domains=("partner.org",))
    async with site.browser() as browser:
        await log_in(site, browser, ANA)  # the first user
    async with site.browser() as browser:
        hops = await log_in(site, browser, OidcUser(sub="sub-carla", email="carla@partner.org", hd=None))
        assert hops[-1][:2] == (302, "/")
    for email in ("eve@badexample.com", "eve@example.com.evil.org", "eve@eu.example.com"):
        async with site.browser() as browser:
            hops = await log_in(site, browser, OidcUser(sub=f"sub-{email}", email=email, hd=None))
            assert hops[-1][0] == 403 and b"email domain is not allowed" in hops[-1][3], email
    async with site.browser() as browser:
        hops = await log_in(site, browser, OidcUser(sub="sub-unverified", email="dan@example.com", email_verified=False))
        assert hops[-1][0] == 403 and b"not verified" in hops[-1][3]
    emails = {u.email for u in await site.runtime.users.list()}  # type: ignore[attr-defined]
    assert emails == {"ana@example.com", "carla@partner.org"}  # refused domains never become users


async def test_tampered_state_missing_cookie_and_provider_tricks_are_401(site: Site) -> None:
    store = site.runtime.store  # type: ignore[attr-defined]
    async with site.browser() as browser:
        async with browser.get(site.url("/login"), allow_redirects=False) as resp:
            authorize = resp.headers["Location"]
        async with browser.get(authorize, allow_redirects=False) as resp:
            callback = urlsplit(resp.headers["Location"])
        query = {k: v[0] for k, v in parse_qs(callback.query).items()}
        before = await store.last_position()
        state = query["state"]
        tampered = urlencode({**query, "state": state[:-2] + ("xx" if not state.endswith("xx") else "yy")})
        async with browser.get(site.url(f"/auth/callback?{tampered}"), allow_redirects=False) as resp:
            assert resp.status == 401 and "state" in (await resp.json())["error"]["message"]
        # The pending login was single-use: the genuine callback now finds nothing either.
        async with browser.get(site.url(f"/auth/callback?{callback.query}"), allow_redirects=False) as resp:
            assert resp.status == 401
    async with aiohttp.ClientSession() as no_cookie:
        async with no_cookie.get(site.url(f"/auth/callback?{callback.query}"), allow_redirects=False) as resp:
            assert resp.status == 401 and "no login in progress" in (await resp.json())["error"]["message"]
    appended = await store.read_all_raw(before, 100)
    assert {e.type for e in appended} == {"LoginDenied"} and all(e.stream_id.startswith("audit-") for e in appended)

    site.provider.knobs = Knobs(wrong_nonce=True)
    async with site.browser() as browser:
        hops = await log_in(site, browser, ANA)
        assert hops[-1][0] == 401 and b"nonce" in hops[-1][3]
    assert await site.runtime.users.list() == []  # type: ignore[attr-defined]


async def test_a_genuine_login_passes_from_an_address_out_of_budget(site: Site) -> None:
    """Before: after others' failures from the same address, a genuine login got 429 too."""
    limiter = site.server.app[LIMITER]
    for _ in range(int(limiter.burst)):
        limiter.failed("127.0.0.1")
    async with aiohttp.ClientSession() as client:
        async with client.get(site.url("/auth/callback?code=x&state=y"), allow_redirects=False) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"]
    async with site.browser() as browser:
        hops = await log_in(site, browser, ANA)
        assert hops[-1][:2] == (302, "/")
        async with browser.get(site.url("/api/v1/me")) as resp:
            assert resp.status == 200
    runtime = site.runtime
    assert await runtime.audit.query(types=["LoginDenied"]) == []  # type: ignore[attr-defined]
    await runtime.audit.flush()  # type: ignore[attr-defined]
    throttled = await runtime.audit.query(types=["AuthenticationThrottled"])  # type: ignore[attr-defined]
    assert [e.data["count"] for e in throttled] == [1]


async def test_tampered_session_cookie_is_401(site: Site) -> None:
    async with site.browser() as browser:
        await log_in(site, browser, ANA)
        good = cookies(browser)[SESSION]
    session_id, secret = good.split(".")
    async with aiohttp.ClientSession() as client:
        flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for forged in (f"{session_id}.{flipped}", f"{session_id}x.{secret}", "garbage", good + "."):
            async with client.get(site.url("/api/v1/me"), headers={"Cookie": f"{SESSION}={forged}"}) as resp:
                assert resp.status == 401, forged
        async with client.get(site.url("/api/v1/me"), headers={"Cookie": f"{SESSION}={good}"}) as resp:
            assert resp.status == 200
    rejected = await site.runtime.audit.query(types=["SessionRejected"])  # type: ignore[attr-defined]
    assert len(rejected) == 4 and all(secret not in str(e.data) for e in rejected)


async def test_login_without_an_oauth_client_is_a_clear_503(site: Site) -> None:
    site.runtime.login.source = oauth_from_settings(site.runtime.settings)  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as client:
        async with client.get(site.url("/login"), allow_redirects=False) as resp:
            body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "login_not_configured"
    assert "bootstrap admin token" in body["error"]["message"]
    # No allowed domain is as good as no client: nobody could get in.
    site.configure(allowed_domains=())
    async with aiohttp.ClientSession() as client:
        async with client.get(site.url("/login"), allow_redirects=False) as resp:
            assert resp.status == 503


async def test_settings_configure_login(site: Site) -> None:
    settings = site.runtime.settings.model_copy(update={  # type: ignore[attr-defined]
        "oidc_issuer": site.provider.issuer, "oidc_client_id": site.provider.client_id,
        "oidc_client_secret": SecretStr(site.provider.client_secret), "allowed_email_domains": ["example.com"],
        "oidc_redirect_uri": site.url("/auth/callback"), "initial_admins": ["ana@example.com"],
    })
    site.runtime.login.source = oauth_from_settings(settings)  # type: ignore[attr-defined]
    async with site.browser() as browser:
        hops = await log_in(site, browser, ANA, "/login?return_to=//evil.example")
        assert hops[-1][:2] == (302, "/")  # no open redirect
        async with browser.get(site.url("/api/v1/me")) as resp:
            assert (await resp.json())["admin"]  # named in MAESTRO_INITIAL_ADMINS


async def test_tokens_of_a_disabled_user_stop_at_once(site: Site) -> None:
    runtime = site.runtime
    token = await user_token(runtime, "carol")  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as client:
        async with client.get(site.url("/api/v1/me"), headers=bearer(token)) as resp:
            assert resp.status == 200
        await runtime.users.change("carol", TESTS, enabled=False)  # type: ignore[attr-defined]
        async with client.get(site.url("/api/v1/me"), headers=bearer(token)) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["message"] == "invalid or expired API token"

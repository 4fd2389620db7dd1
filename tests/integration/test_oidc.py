"""OpenID Connect login, end to end against a real local provider, and every way it must refuse."""

from __future__ import annotations

import dataclasses
import doctest
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest
from oidc_provider import Knobs, LocalOidcProvider

from maestro.adapters import oidc as oidc_module
from maestro.adapters.oidc import (
    GOOGLE_ISSUER,
    Identity,
    LoginStart,
    OidcClient,
    OidcConfig,
    email_domain_allowed,
)
from maestro.errors import ConfigurationError, IdentityProviderUnavailable, Unauthenticated

# Nothing listens here: the browser's last redirect is captured, never followed.
REDIRECT_URI = "http://127.0.0.1:9/auth/callback"


@pytest.fixture
async def provider() -> AsyncIterator[LocalOidcProvider]:
    async with LocalOidcProvider() as running:
        yield running


@pytest.fixture
async def client(provider: LocalOidcProvider) -> AsyncIterator[OidcClient]:
    config = OidcConfig(issuer=provider.issuer, client_id=provider.client_id,
                        client_secret=provider.client_secret, redirect_uri=REDIRECT_URI)
    async with OidcClient(config) as oidc:
        await oidc.discover()
        yield oidc


async def browse(url: str) -> tuple[str, str]:
    """Act as the browser: follow redirects until the one to REDIRECT_URI; return (code, state)."""
    async with aiohttp.ClientSession() as browser:
        for _ in range(10):
            if url.startswith(REDIRECT_URI):
                query = parse_qs(urlsplit(url).query)
                return query["code"][0], query["state"][0]
            async with browser.get(url, allow_redirects=False) as resp:
                assert resp.status in (301, 302, 303, 307), (resp.status, await resp.text())
                url = urljoin(url, resp.headers["Location"])
    raise AssertionError("too many redirects")


async def login(client: OidcClient) -> Identity:
    start = client.begin()
    code, state = await browse(start.url)
    return await client.finish(code=code, state=state, expected=start)


async def test_full_login(client: OidcClient, provider: LocalOidcProvider) -> None:
    identity = await login(client)
    assert identity == Identity(subject=provider.user.sub, issuer=provider.issuer, email="ana@example.com",
                                email_verified=True, name="Ana Lytic", hosted_domain="example.com")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_authenticates_as_the_issuer_advertises(provider: LocalOidcProvider, method: str) -> None:
    provider.auth_methods = (method,)
    config = OidcConfig(issuer=provider.issuer, client_id=provider.client_id,
                        client_secret=provider.client_secret, redirect_uri=REDIRECT_URI)
    async with OidcClient(config) as oidc:
        await oidc.discover()
        assert (await login(oidc)).subject == provider.user.sub
    assert provider.auth_used == method


async def test_authorization_url_carries_pkce_state_and_nonce(client: OidcClient) -> None:
    start = client.begin(extra={"prompt": "select_account"})
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    assert query["state"] == start.state and query["nonce"] == start.nonce
    assert query["code_challenge_method"] == "S256" and start.code_verifier not in start.url
    assert query["redirect_uri"] == REDIRECT_URI and query["scope"] == "openid email profile"
    assert query["prompt"] == "select_account"
    assert start.code_verifier not in repr(start)
    other = client.begin()
    assert {other.state, other.nonce, other.code_verifier}.isdisjoint({start.state, start.nonce, start.code_verifier})
    with pytest.raises(ValueError, match="state"):
        client.begin(extra={"state": "mine"})


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        (Knobs(audience="someone-else"), r"audience \(aud\) 'someone-else' is not this client"),
        (Knobs(audience=["maestro-test-client", "other"]), r"several audiences.*\(azp\)"),
        (Knobs(issuer="https://evil.example"), r"issuer \(iss\) is 'https://evil.example'"),
        (Knobs(expired=True), r"has expired"),
        (Knobs(issued_in_future=True), r"issued in the future \(iat is 3\d{3} s ahead\)"),
        (Knobs(wrong_nonce=True), r"nonce does not match"),
        (Knobs(bad_signature=True), r"signature does not verify"),
        (Knobs(unknown_kid=True), r"key 'stranger', which the issuer's JWKS .* does not list"),
        (Knobs(omit_id_token=True), r"carries no ID token"),
    ],
    ids=["audience", "azp", "issuer", "expired", "future", "nonce", "signature", "unknown-kid", "no-id-token"],
)
async def test_misbehaving_provider_is_refused(
    client: OidcClient, provider: LocalOidcProvider, knobs: Knobs, message: str
) -> None:
    provider.knobs = knobs
    with pytest.raises(Unauthenticated, match=message) as info:
        await login(client)
    assert type(info.value) is Unauthenticated and info.value.status == 401
    assert info.value.message.startswith("login refused: ")


async def test_tampered_state_is_refused_before_the_code_is_spent(
    client: OidcClient, provider: LocalOidcProvider
) -> None:
    start = client.begin()
    code, state = await browse(start.url)
    for forged in (state[:-1] + ("A" if state[-1] != "A" else "B"), "", "é" * 5):
        with pytest.raises(Unauthenticated, match="state in the callback does not match"):
            await client.finish(code=code, state=forged, expected=start)
    assert provider.token_requests == 0
    assert (await client.finish(code=code, state=state, expected=start)).subject == provider.user.sub


async def test_pkce_verifier_mismatch_is_refused_by_the_provider(
    client: OidcClient, provider: LocalOidcProvider
) -> None:
    start = client.begin()
    code, state = await browse(start.url)
    # An attacker who intercepted the code (and even the state) lacks the verifier.
    stolen = dataclasses.replace(start, code_verifier=client.begin().code_verifier)
    with pytest.raises(Unauthenticated, match=r"rejected the authorization code \(invalid_grant: PKCE"):
        await client.finish(code=code, state=state, expected=stolen)
    assert provider.token_requests == 1


async def test_replayed_code_is_refused(client: OidcClient) -> None:
    start = client.begin()
    code, state = await browse(start.url)
    await client.finish(code=code, state=state, expected=start)
    with pytest.raises(Unauthenticated, match=r"invalid_grant: .*already used"):
        await client.finish(code=code, state=state, expected=start)


async def test_wrong_client_secret_is_named(provider: LocalOidcProvider) -> None:
    config = OidcConfig(issuer=provider.issuer, client_id=provider.client_id, client_secret="wrong",
                        redirect_uri=REDIRECT_URI)
    async with OidcClient(config) as oidc:
        await oidc.discover()
        with pytest.raises(Unauthenticated, match="rejected Maestro's OAuth client.*check the client id and secret"):
            await login(oidc)
    assert "wrong" not in repr(config)


async def test_rotated_signing_key_is_fetched(client: OidcClient, provider: LocalOidcProvider) -> None:
    await login(client)
    provider.rotate_key()  # our cached JWKS no longer has the signing key
    assert (await login(client)).email == "ana@example.com"


async def test_finish_discovers_on_first_use(provider: LocalOidcProvider) -> None:
    config = OidcConfig(issuer=provider.issuer + "/", client_id=provider.client_id,
                        client_secret=provider.client_secret, redirect_uri=REDIRECT_URI)
    async with aiohttp.ClientSession() as session:
        async with OidcClient(config, session=session) as discovering:
            await discovering.discover()
            start = discovering.begin()
        code, state = await browse(start.url)
        # A fresh client (another replica, say) finishes the login another one began.
        async with OidcClient(config, session=session) as fresh:
            assert (await fresh.finish(code=code, state=state, expected=start)).subject == provider.user.sub
        assert not session.closed  # a session we passed in is ours to close


async def test_unreachable_or_unusable_issuer(provider: LocalOidcProvider) -> None:
    async with OidcClient(OidcConfig(issuer="http://127.0.0.1:9", client_id="x", client_secret="y",
                                     redirect_uri=REDIRECT_URI), timeout=2) as down:
        with pytest.raises(IdentityProviderUnavailable, match="cannot fetch the discovery document"):
            await down.discover()
        with pytest.raises(ConfigurationError, match="discover"):
            down.begin()
        with pytest.raises(IdentityProviderUnavailable) as info:
            await down.finish(code="c", state="s", expected=LoginStart("u", "s", "n", "v"))
        assert info.value.status == 503 and isinstance(info.value, Unauthenticated)

    wrong_issuer = OidcConfig(issuer=provider.issuer + "/elsewhere", client_id="x", client_secret="y",
                              redirect_uri=REDIRECT_URI)
    async with OidcClient(wrong_issuer) as oidc:
        with pytest.raises(IdentityProviderUnavailable, match="HTTP 404"):
            await oidc.discover()


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="https"):
        OidcConfig(issuer="http://accounts.example.com", client_id="x", client_secret="y", redirect_uri=REDIRECT_URI)
    with pytest.raises(ConfigurationError, match="openid"):
        OidcConfig(issuer=GOOGLE_ISSUER, client_id="x", client_secret="y", redirect_uri=REDIRECT_URI,
                   scopes=("email",))
    config = OidcConfig(issuer=GOOGLE_ISSUER, client_id="x", client_secret="GOCSPX-s3cr3t", redirect_uri=REDIRECT_URI)
    assert "s3cr3t" not in repr(config)


@pytest.mark.parametrize(
    ("email", "allowed", "expected"),
    [
        ("ana@example.com", ["example.com"], True),
        ("Ana@EXAMPLE.com", ["Example.COM"], True),
        ("ana@example.com", [" example.com "], True),
        ("ana@example.org", ["example.com", "example.org"], True),
        ("ana@eu.example.com", ["eu.example.com"], True),
        ('"ana@example.com"@example.com', ["example.com"], True),
        ("ana@badexample.com", ["example.com"], False),  # the original's suffix match let this in
        ("ana@example.com.evil.org", ["example.com"], False),
        ("ana@eu.example.com", ["example.com"], False),  # subdomains only when listed
        ("ana@evil.org@example.com", ["evil.org"], False),  # only the last '@' counts
        ("ana@example.com.", ["example.com"], False),
        ("ana@example.com ", ["example.com"], False),
        ("example.com", ["example.com"], False),
        ("@example.com", ["example.com"], False),
        ("ana@", [""], False),
        ("ana@example.com", [], False),  # no allowed domain admits no one
        ("ana@example.com", [""], False),
        (None, ["example.com"], False),
        ("", ["example.com"], False),
    ],
)
def test_email_domain_allowed(email: str | None, allowed: list[str], expected: bool) -> None:
    assert email_domain_allowed(email, allowed) is expected


def test_email_domain_allowed_accepts_any_iterable() -> None:
    assert email_domain_allowed("ana@example.com", (d for d in ["example.com"]))


def test_docstring_examples() -> None:
    result = doctest.testmod(oidc_module)
    assert result.attempted > 0 and result.failed == 0

"""A real, minimal OpenID Connect provider for tests (aiohttp, on 127.0.0.1, random port).

It does what Google does for the authorization code flow, minus the login form: ``/authorize``
redirects straight back with a code for ``provider.user``. ``/token`` checks the client, the code
(once only), the redirect URI and PKCE (SHA-256 of the verifier against the recorded challenge), and
returns an RS256 ID token. ``provider.knobs`` make it misbehave the ways an attacker or a broken
issuer would.

    async with LocalOidcProvider(client_id="maestro", client_secret="s3cret") as provider:
        provider.issuer   # http://127.0.0.1:<port>
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlencode

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey


@dataclass
class OidcUser:
    sub: str = "10769150350006150715113082367"
    email: str = "ana@example.com"
    email_verified: bool = True
    name: str = "Ana Lytic"
    hd: str | None = "example.com"


@dataclass
class Knobs:
    """Ways to misbehave; all off by default."""

    audience: str | list[str] | None = None  # aud to put in the ID token instead of the client id
    issuer: str | None = None  # iss to put in the ID token instead of the real one
    expired: bool = False  # exp an hour ago
    issued_in_future: bool = False  # iat an hour ahead (a clock far off)
    wrong_nonce: bool = False
    bad_signature: bool = False  # signed by another key under the published kid
    unknown_kid: bool = False  # signed by another key under a kid the JWKS does not list
    omit_id_token: bool = False


def _new_key(kid: str) -> RSAKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": "RS256"})


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    user: OidcUser


@dataclass
class LocalOidcProvider:
    client_id: str = "maestro-test-client"
    client_secret: str = "maestro-test-secret"
    user: OidcUser = field(default_factory=OidcUser)
    knobs: Knobs = field(default_factory=Knobs)
    auth_methods: tuple[str, ...] = ("client_secret_post", "client_secret_basic")  # as advertised
    issuer: str = ""
    token_requests: int = 0
    auth_used: str | None = None  # how the client authenticated at /token last time
    _key: RSAKey = field(default_factory=lambda: _new_key("key-1"))
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> LocalOidcProvider:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.issuer = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def rotate_key(self) -> None:
        """Publish and sign with a new key (as issuers do every few weeks)."""
        self._key = _new_key(f"key-{secrets.token_hex(4)}")

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "token_endpoint_auth_methods_supported": list(self.auth_methods),
        })

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self._key.as_dict(private=False)]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        problems = [
            name for name, ok in [
                ("response_type", q.get("response_type") == "code"),
                ("client_id", q.get("client_id") == self.client_id),
                ("scope", "openid" in q.get("scope", "").split()),
                ("code_challenge_method", q.get("code_challenge_method") == "S256"),
                ("code_challenge", len(q.get("code_challenge", "")) == 43),
                ("redirect_uri", bool(q.get("redirect_uri"))),
            ] if not ok
        ]
        if problems:
            return web.json_response({"error": "invalid_request", "error_description": f"bad {problems}"}, status=400)
        code = secrets.token_urlsafe(24)
        self._grants[code] = _Grant(self.client_id, q["redirect_uri"], q["code_challenge"], q.get("nonce"), self.user)
        back = {"code": code, **({"state": q["state"]} if "state" in q else {})}
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(back)}")

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        self.auth_used = "client_secret_post" if client_secret is not None else "none"
        if request.headers.get("Authorization", "").startswith("Basic "):
            decoded = base64.b64decode(request.headers["Authorization"][6:]).decode()
            client_id, _, client_secret = (unquote_plus(part) for part in decoded.partition(":"))
            self.auth_used = "client_secret_basic"
        if client_id != self.client_id or client_secret != self.client_secret:
            return _error(401, "invalid_client", "unknown client or wrong secret")
        if form.get("grant_type") != "authorization_code":
            return _error(400, "unsupported_grant_type", str(form.get("grant_type")))
        grant = self._grants.pop(str(form.get("code", "")), None)  # pop: a code works once
        if grant is None:
            return _error(400, "invalid_grant", "unknown, expired or already used authorization code")
        if form.get("redirect_uri") != grant.redirect_uri:
            return _error(400, "invalid_grant", "redirect_uri differs from the authorization request")
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not secrets.compare_digest(challenge, grant.code_challenge):
            return _error(400, "invalid_grant", "PKCE verification failed: code_verifier does not match")
        answer: dict[str, Any] = {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                  "expires_in": 3600, "scope": "openid email profile"}
        if not self.knobs.omit_id_token:
            answer["id_token"] = self._id_token(grant)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    def _id_token(self, grant: _Grant) -> str:
        k, now = self.knobs, int(time.time())
        claims: dict[str, Any] = {
            "iss": k.issuer or self.issuer,
            "aud": k.audience if k.audience is not None else grant.client_id,
            "sub": grant.user.sub, "email": grant.user.email, "email_verified": grant.user.email_verified,
            "name": grant.user.name, "iat": now, "exp": now + 3600,
        }
        if k.expired:
            claims.update(iat=now - 7200, exp=now - 3600)
        if k.issued_in_future:
            claims.update(iat=now + 3600, exp=now + 7200)
        if grant.user.hd:
            claims["hd"] = grant.user.hd
        if grant.nonce is not None:
            claims["nonce"] = "not-the-nonce" if k.wrong_nonce else grant.nonce
        key, kid = self._key, self._key.kid
        if k.bad_signature or k.unknown_kid:
            key = _new_key("stranger")
            kid = "stranger" if k.unknown_kid else kid
        return jwt.encode({"alg": "RS256", "kid": kid}, claims, key)


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)

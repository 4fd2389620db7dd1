"""OpenID Connect login: authorization code flow with PKCE, for Google or any OIDC issuer.

The one module that imports authlib (and joserfc, authlib's JOSE library). Usage::

    async with OidcClient(OidcConfig(issuer=GOOGLE_ISSUER, client_id=..., client_secret=...,
                                     redirect_uri="https://maestro.example/auth/callback")) as oidc:
        await oidc.discover()
        start = oidc.begin()   # keep state, nonce and code_verifier server-side; redirect to start.url
        ...                    # the browser comes back to redirect_uri with ?code=...&state=...
        identity = await oidc.finish(code=code, state=state, expected=start)
        admitted = identity.email_verified and email_domain_allowed(identity.email, ["example.com"])

What each check stops:

- ``state`` binds the callback to the browser that began the login (CSRF, login fixation). The
  caller must find the pending login through something the *browser* holds (a cookie set by
  ``begin``), never by the ``state`` in the callback URL, or comparing them proves nothing.
- PKCE (S256) makes an intercepted authorization code useless without our ``code_verifier``.
- ``nonce`` binds the ID token to this login, so an ID token from another login cannot be replayed.
- signature (against the issuer's JWKS), ``iss``, ``aud``/``azp``, ``exp`` and ``iat``: the token was
  minted by the issuer, for this client, recently.

Users are identified by ``(issuer, subject)``: email addresses can change hands, subjects cannot.

Failures during ``finish`` raise :class:`~maestro.errors.Unauthenticated` naming the check that
failed, or its subclass :class:`~maestro.errors.IdentityProviderUnavailable` (HTTP 503) when the
issuer cannot be reached; ``discover`` raises ``ConfigurationError`` for an unusable issuer.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from maestro.errors import ConfigurationError, IdentityProviderUnavailable, Unauthenticated

__all__ = ["GOOGLE_ISSUER", "Identity", "LoginStart", "OidcClient", "OidcConfig", "email_domain_allowed"]

GOOGLE_ISSUER = "https://accounts.google.com"
# Asymmetric algorithms only: HS256 would make the client secret a signing key, and "none" is none.
_ASYMMETRIC_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_OURS = {"response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
         "code_challenge_method"}


def _require_secure(url: str, what: str) -> str:
    """https, or plain http to this machine (local development and tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return url
    raise ConfigurationError(f"the OIDC {what} {url!r} must be an https:// URL")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    leeway: int = 60  # seconds of clock skew tolerated on exp and iat

    def __post_init__(self) -> None:
        _require_secure(self.issuer, "issuer")
        if "openid" not in self.scopes:
            raise ConfigurationError("the OIDC scopes must include 'openid' (without it there is no ID token)")


@dataclass(frozen=True)
class LoginStart:
    """What ``begin`` made: redirect the browser to ``url``; store the rest server-side."""

    url: str
    state: str
    nonce: str
    code_verifier: str = field(repr=False)


@dataclass(frozen=True)
class Identity:
    subject: str
    issuer: str
    email: str | None
    email_verified: bool
    name: str | None
    hosted_domain: str | None = None  # Google Workspace's `hd` claim: the account's organisation


@dataclass(frozen=True)
class _Issuer:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    signing_algs: tuple[str, ...]
    auth_method: str


class OidcClient:
    """One configured issuer. Share one instance: it caches the discovery document and the JWKS."""

    def __init__(self, config: OidcConfig, *, session: aiohttp.ClientSession | None = None,
                 timeout: float = 10.0) -> None:
        self.config = config
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._meta: _Issuer | None = None
        self._keys = KeySet([])  # empty until discover(); an unknown kid triggers a fetch anyway

    async def __aenter__(self) -> OidcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def discover(self) -> None:
        """Fetch and check the discovery document, then the JWKS."""
        await self._discover()

    async def _discover(self) -> _Issuer:
        base = self.config.issuer.rstrip("/")
        doc = await self._get_json(f"{base}/.well-known/openid-configuration", "discovery document")
        issuer = doc.get("issuer")
        # OIDC Discovery 4.3: the document must name the issuer we asked, or it speaks for another.
        if not isinstance(issuer, str) or issuer.rstrip("/") != base:
            raise ConfigurationError(f"the discovery document at {base} names issuer {issuer!r}, not {base!r}")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(name), str):
                raise ConfigurationError(f"the discovery document of {issuer} has no {name}")
            endpoints[name] = _require_secure(doc[name], name)
        pkce = doc.get("code_challenge_methods_supported")
        if pkce is not None and "S256" not in pkce:
            raise ConfigurationError(f"{issuer} does not support PKCE with S256 (it lists {pkce})")
        advertised = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
        algs = tuple(a for a in advertised if a in _ASYMMETRIC_ALGS)
        if not algs:
            raise ConfigurationError(f"{issuer} signs ID tokens only with {advertised}, none of {_ASYMMETRIC_ALGS}")
        # The spec's default is client_secret_basic; Google lists both.
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        method = next((m for m in ("client_secret_basic", "client_secret_post") if m in methods), None)
        if method is None:
            raise ConfigurationError(f"{issuer} supports no client-secret authentication (it lists {methods})")
        meta = _Issuer(issuer=issuer, signing_algs=algs, auth_method=method, **endpoints)
        self._keys = await self._fetch_keys(meta)
        self._meta = meta
        return meta

    def begin(self, extra: Mapping[str, str] | None = None) -> LoginStart:
        """Start a login. ``extra`` adds authorization parameters, e.g. Google's ``prompt`` or ``hd``."""
        if self._meta is None:
            raise ConfigurationError("OidcClient.discover() must run before begin()")
        if extra and _OURS & set(extra):
            raise ValueError(f"these parameters are set by begin(): {sorted(_OURS & set(extra))}")
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = prepare_grant_uri(
            self._meta.authorization_endpoint, self.config.client_id, "code",
            redirect_uri=self.config.redirect_uri, scope=" ".join(self.config.scopes), state=state,
            nonce=nonce, code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256",
            **dict(extra or {}),
        )
        return LoginStart(url=url, state=state, nonce=nonce, code_verifier=verifier)

    async def finish(self, *, code: str, state: str, expected: LoginStart) -> Identity:
        """Complete a login from the callback's ``code`` and ``state``; verify everything."""
        if not hmac.compare_digest(state.encode(), expected.state.encode()):
            raise Unauthenticated("login refused: the state in the callback does not match this login "
                                  "(a forged or stale callback)")
        if not code:
            raise Unauthenticated("login refused: the callback carries no authorization code")
        meta = self._meta or await self._discover()
        tokens = await self._exchange(meta, code, expected.code_verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated("login refused: the token response carries no ID token")
        claims = await self._verify(meta, id_token)
        _check_claims(claims, meta.issuer, self.config, expected.nonce, time.time())
        hd = claims.get("hd")
        return Identity(
            # The discovered issuer, not the claim: Google's two spellings must give one user.
            subject=claims["sub"], issuer=meta.issuer, email=_str_or_none(claims.get("email")),
            # Some issuers send the boolean as a string.
            email_verified=claims.get("email_verified") in (True, "true"),
            name=_str_or_none(claims.get("name")), hosted_domain=_str_or_none(hd),
        )

    async def _exchange(self, meta: _Issuer, code: str, verifier: str) -> dict[str, Any]:
        body = prepare_token_request("authorization_code", code=code,
                                     redirect_uri=self.config.redirect_uri, code_verifier=verifier)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        auth = ClientAuth(self.config.client_id, self.config.client_secret, meta.auth_method)
        url, headers, body = auth.prepare("POST", meta.token_endpoint, headers, body)
        try:
            async with self._http().post(url, data=body.encode(), headers=headers, timeout=self._timeout) as resp:
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IdentityProviderUnavailable(f"cannot reach the token endpoint {url}: {exc!r}") from exc
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if status == 200 and isinstance(answer, dict):
            return answer
        if status < 500 and isinstance(answer, dict) and isinstance(answer.get("error"), str):
            error, description = answer["error"], answer.get("error_description")
            why = f"{error}: {description}" if description else error
            if error in ("invalid_client", "unauthorized_client"):
                raise Unauthenticated(f"login refused: the identity provider rejected Maestro's OAuth client "
                                      f"({why}); check the client id and secret", oauth_error=error)
            raise Unauthenticated(f"login refused: the identity provider rejected the authorization code ({why})",
                                  oauth_error=error)
        raise IdentityProviderUnavailable(f"the token endpoint {url} answered HTTP {status} without a usable body")

    async def _verify(self, meta: _Issuer, id_token: str) -> dict[str, Any]:
        """Check the signature and return the claims (not yet checked)."""
        try:
            header = jws.extract_compact(id_token.encode()).headers()
        except (JoseError, ValueError) as exc:
            raise Unauthenticated("login refused: the ID token is not a well-formed signed JWT") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in meta.signing_algs:
            raise Unauthenticated(f"login refused: the ID token is signed with {alg!r}, not one of {meta.signing_algs}")
        key = await self._signing_key(meta, kid)
        try:
            return jwt.decode(id_token, key, algorithms=[alg]).claims
        except BadSignatureError:
            raise Unauthenticated(f"login refused: the ID token signature does not verify with the "
                                  f"issuer's key {kid!r}") from None
        except JoseError as exc:
            raise Unauthenticated(f"login refused: the ID token cannot be verified ({exc})") from exc

    async def _signing_key(self, meta: _Issuer, kid: str | None) -> Any:
        try:
            return self._keys.get_by_kid(kid, {"use": "sig"})
        except InvalidKeyIdError:
            pass
        # Issuers publish a new key before signing with it, so an unknown kid means our copy of the
        # JWKS is older than the token: refetch once. No rate limit is needed: ID tokens reach us
        # from the token endpoint over TLS, never from the browser, so no one can force refetches.
        self._keys = await self._fetch_keys(meta)
        try:
            return self._keys.get_by_kid(kid, {"use": "sig"})
        except InvalidKeyIdError:
            raise Unauthenticated(f"login refused: the ID token is signed with key {kid!r}, which the "
                                  f"issuer's JWKS ({meta.jwks_uri}) does not list") from None

    async def _fetch_keys(self, meta: _Issuer) -> KeySet:
        doc = await self._get_json(meta.jwks_uri, "JWKS")
        try:
            return KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (JoseError, KeyError, TypeError, ValueError) as exc:
            raise IdentityProviderUnavailable(f"the JWKS at {meta.jwks_uri} holds no usable key: {exc}") from exc

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._http().get(url, headers={"Accept": "application/json"}, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise IdentityProviderUnavailable(f"the {what} at {url} answered HTTP {resp.status}")
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdentityProviderUnavailable(f"cannot fetch the {what} from {url}: {exc!r}") from exc
        if not isinstance(doc, dict):
            raise IdentityProviderUnavailable(f"the {what} at {url} is not a JSON object")
        return doc

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


def _check_claims(claims: Mapping[str, Any], issuer: str, config: OidcConfig, nonce: str, now: float) -> None:
    def refuse(why: str) -> NoReturn:
        raise Unauthenticated(f"login refused: the ID token {why}")

    # Google documents both spellings of its own issuer in ID tokens.
    issuers = {issuer, "accounts.google.com"} if issuer == GOOGLE_ISSUER else {issuer}
    if claims.get("iss") not in issuers:
        refuse(f"issuer (iss) is {claims.get('iss')!r}, not {issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if config.client_id not in audiences:
        refuse(f"audience (aud) {aud!r} is not this client {config.client_id!r}")
    if len(audiences) > 1 and claims.get("azp") != config.client_id:
        refuse(f"has several audiences and its authorized party (azp) {claims.get('azp')!r} is not this client")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        refuse("has no subject (sub)")
    if not _is_number(claims.get("exp")) or not _is_number(claims.get("iat")):
        refuse("lacks its expiry (exp) or issue time (iat)")
    exp, iat = float(claims["exp"]), float(claims["iat"])
    if now > exp + config.leeway:
        refuse(f"has expired (exp was {int(now - exp)} s ago)")
    if iat > now + config.leeway:
        refuse(f"was issued in the future (iat is {int(iat - now)} s ahead): check the clocks")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        refuse("nonce does not match this login (an ID token replayed from another login)")


def email_domain_allowed(email: str | None, allowed_domains: Iterable[str]) -> bool:
    """True if the domain after the last ``@`` equals one of ``allowed_domains`` (any case).

    Exact matches only, unlike the original's suffix match; list subdomains to admit them. Callers
    must also require ``Identity.email_verified``.

    >>> email_domain_allowed("Ana@Example.COM", ["example.com"])
    True
    >>> [email_domain_allowed(e, ["example.com"]) for e in
    ...  ["ana@badexample.com", "ana@example.com.evil.org", "ana@eu.example.com", "example.com", "@example.com"]]
    [False, False, False, False, False]
    """
    if not email:
        return False
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return False
    wanted = {d.strip().lower() for d in allowed_domains} - {""}
    return domain.lower() in wanted


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None

"""Login with OpenID Connect: begin (redirect to the issuer), finish (callback), admit, open a session.

The pending login (state, nonce, PKCE verifier) is kept server-side in ``auth_pending_logins``,
found through a random value in a short-lived cookie of the browser that began it, and deleted on
first use. Finding it by the cookie rather than by the ``state`` in the callback URL is what makes
the state check mean something (see ``maestro.adapters.oidc``).

Admission: the email must be verified by the issuer and its domain on ``allowed_domains`` (exact
match; ``*`` admits any domain); a new person starts disabled unless their domain is on
``auto_enable_domains``; only the people the configuration names in ``initial_admins`` become
(enabled) administrators, at their first login. Every refusal is recorded as ``LoginDenied``.

Where the OAuth client comes from is a callable (``source``), read at each login so that a change
applies to the next login without a restart: today the settings; the live configuration can
replace it with anything returning an :class:`OAuthClientConfig` (or None when unconfigured).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from maestro.adapters.oidc import LoginStart, OidcClient, OidcConfig, email_domain_allowed
from maestro.errors import Forbidden, LoginNotConfigured, MaestroError, Unauthenticated
from maestro.events.auth import LoginDenied
from maestro.events.model import now
from maestro.events.store import EventStore
from maestro.handlers.people.audit import ANONYMOUS, AuditLog
from maestro.handlers.people.principal import secret_hash
from maestro.handlers.people.sessions import SessionService
from maestro.handlers.people.users import UserService, UserView
from maestro.settings import Settings

PENDING_LIFETIME = dt.timedelta(minutes=10)
NOT_CONFIGURED = (
    "login is not configured: an administrator must set the OAuth client (issuer, client id and "
    "secret, allowed email domains) with the bootstrap admin token or the `maestro` CLI"
)


@dataclass(frozen=True, slots=True)
class OAuthClientConfig:
    issuer: str
    client_id: str
    client_secret: SecretStr
    redirect_uri: str | None
    allowed_domains: tuple[str, ...]
    auto_enable_domains: tuple[str, ...] = ()
    initial_admins: tuple[str, ...] = ()  # emails that become administrators at their first login


def oauth_from_settings(settings: Settings) -> Callable[[], OAuthClientConfig | None]:
    def source() -> OAuthClientConfig | None:
        if not settings.oidc_client_id or settings.oidc_client_secret is None:
            return None
        return OAuthClientConfig(
            settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret,
            settings.oidc_redirect_uri, tuple(settings.allowed_email_domains),
            tuple(settings.auto_enable_domains), tuple(settings.initial_admins),
        )

    return source


@dataclass(frozen=True, slots=True)
class LoggedIn:
    user: UserView
    cookie: str
    expires_at: dt.datetime
    return_to: str
    created: bool


class LoginService:
    def __init__(
        self,
        store: EventStore,
        users: UserService,
        sessions: SessionService,
        audit: AuditLog,
        *,
        source: Callable[[], OAuthClientConfig | None],
        public_url: str,
    ) -> None:
        self.store = store
        self.users = users
        self.sessions = sessions
        self.audit = audit
        self.source = source
        self.public_url = public_url.rstrip("/")
        self._client: tuple[OidcConfig, OidcClient] | None = None

    def configured(self) -> OAuthClientConfig:
        config = self.source()
        if config is None or not config.allowed_domains:
            raise LoginNotConfigured(NOT_CONFIGURED)
        return config

    async def _oidc(self, config: OAuthClientConfig) -> OidcClient:
        wanted = OidcConfig(
            issuer=config.issuer, client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            redirect_uri=config.redirect_uri or f"{self.public_url}/auth/callback",
        )
        if self._client is not None and self._client[0] == wanted:
            return self._client[1]
        client = OidcClient(wanted)
        await client.discover()
        old, self._client = self._client, (wanted, client)
        if old is not None:
            await old[1].aclose()
        return client

    async def begin(self, return_to: str) -> tuple[str, str]:
        """Start a login; return (the value for the browser's login cookie, the issuer URL)."""
        oidc = await self._oidc(self.configured())
        start = oidc.begin()
        browser = secrets.token_urlsafe(32)
        await self.store.pool.execute("DELETE FROM auth_pending_logins WHERE expires_at < now()")
        await self.store.pool.execute(
            "INSERT INTO auth_pending_logins (login_hash, state, nonce, code_verifier, return_to, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            secret_hash(browser), start.state, start.nonce, start.code_verifier, return_to, now() + PENDING_LIFETIME,
        )
        return browser, start.url

    async def finish(
        self, browser: str | None, *, code: str, state: str, error: str | None, address: str | None,
        audit_refusal: bool = True,
    ) -> LoggedIn:
        """Complete the login the browser began; every refusal is audited and re-raised.

        ``audit_refusal=False``: the caller counts a refused attempt itself (an address out of
        its failure budget); failures of ours (5xx) are recorded all the same.
        """
        who: dict[str, str | None] = {"email": None, "user_id": None}
        try:
            return await self._finish(browser, code, state, error, address, who)
        except MaestroError as exc:
            if not audit_refusal and exc.status < 500:
                raise
            actor = f"user:{who['user_id']}" if who["user_id"] else ANONYMOUS
            await self.audit.record(LoginDenied(reason=exc.message, address=address, **who), actor)
            raise

    async def _finish(self, browser: str | None, code: str, state: str, error: str | None,
                      address: str | None, who: dict[str, str | None]) -> LoggedIn:
        config = self.configured()
        pending = None
        if browser:
            pending = await self.store.pool.fetchrow(
                "DELETE FROM auth_pending_logins WHERE login_hash = $1 AND expires_at > now() "
                "RETURNING state, nonce, code_verifier, return_to",
                secret_hash(browser),
            )
        if pending is None:
            raise Unauthenticated("login refused: no login in progress in this browser (its login cookie is "
                                  "missing or expired); start again")
        if error:
            raise Unauthenticated(f"login refused: the identity provider answered {error[:100]!r}")
        expected = LoginStart(url="", state=pending["state"], nonce=pending["nonce"],
                              code_verifier=pending["code_verifier"])
        identity = await (await self._oidc(config)).finish(code=code, state=state, expected=expected)
        who["email"] = identity.email
        if not identity.email_verified:
            raise Forbidden("login refused: the identity provider has not verified this email address")
        if "*" not in config.allowed_domains and not email_domain_allowed(identity.email, config.allowed_domains):
            raise Forbidden("login refused: this email domain is not allowed to use Maestro")
        user, created = await self.users.sign_in(
            identity.issuer, identity.subject, identity.email, identity.name,
            enable_new=email_domain_allowed(identity.email, config.auto_enable_domains),
            admin_emails=config.initial_admins,
        )
        who["user_id"] = user.user_id
        if not user.enabled:
            raise Forbidden("login refused: this account is waiting for an administrator to enable it")
        cookie, expires_at = await self.sessions.start(user.user_id, address=address)
        return LoggedIn(user, cookie, expires_at, pending["return_to"], created)

    async def close(self) -> None:
        if self._client is not None:
            await self._client[1].aclose()
            self._client = None

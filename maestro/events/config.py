"""Configuration events: what Maestro is connected to, one stream per section (``config-<name>``).

Sections are ``bigquery``, ``slack``, ``git``, ``oauth`` and ``pricing`` (stream ``config-<section>``)
and one stream per source database (``config-db-<name>``). Every event carries the *whole* state
of its stream (non-secret settings and the ciphertext of every secret), not a delta: a reader that
missed an event (a replica's in-memory view, a lagging subscription) is right again as soon as it
sees any later one, and the projection is a plain upsert.

Secret fields hold only :data:`Ciphertext` (``v1.<key id>.<data>`` from ``adapters.secrets``): a
plaintext put there by mistake fails validation instead of entering the append-only log, where
it could never be removed. Error messages about secret values describe the problem and never
quote the value.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from maestro.events.catalog import DatasetName, ProjectId
from maestro.events.digests import DigestPeriod
from maestro.events.model import Event

SectionName = Literal["bigquery", "databases", "slack", "git", "oauth", "pricing"]
SINGLE_SECTIONS: tuple[str, ...] = ("bigquery", "slack", "git", "oauth", "pricing")
DATABASE_STREAM_PREFIX = "config-db-"

# The shape of adapters.secrets tokens (nonce + tag alone are 28 bytes: >= 38 base64 characters).
Ciphertext = Annotated[str, StringConstraints(pattern=r"^v\d+\.[0-9a-f]{8}\.[A-Za-z0-9_-]{38,}$")]
# Also a pydantic pattern (Rust regex, where "$" is the end of the text); in Python use fullmatch,
# since re's "$" matches before a trailing newline too.
DATABASE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DatabaseName = Annotated[str, StringConstraints(pattern=DATABASE_NAME.pattern)]

_DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_LOCATION = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,39}")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def config_stream(section: str, name: str | None = None) -> str:
    return f"{DATABASE_STREAM_PREFIX}{name}" if section == "databases" else f"config-{section}"


def _domain(value: str) -> str:
    value = value.strip().lower().removeprefix("@")
    if not _DOMAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a domain name (like example.com)")
    return value


def _http_url(value: str, *, what: str = "URL", echo: bool = True) -> str:
    """An https URL (http only to this machine, for development and tests)."""
    shown = f" {value!r}" if echo else ""
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(f"the {what}{shown} does not parse") from None
    local_http = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
    if not parts.hostname or not (parts.scheme == "https" or local_http):
        raise ValueError(f"the {what}{shown} must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and API responses: they go in the secret field.
        raise ValueError(f"the {what} must not carry credentials (user:password@)")
    return value


def _email(value: str) -> str:
    value = value.strip().lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or any(c.isspace() for c in local):
        raise ValueError(f"{value!r} is not an email address (like ana@example.com)")
    return f"{local}@{_domain(domain)}"


Domain = Annotated[str, AfterValidator(_domain)]
Email = Annotated[str, AfterValidator(_email)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Section(BaseModel):
    """The non-secret settings of a section; ``secret_fields`` name the encrypted ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_fields: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ()  # all set: the section counts as configured

    @classmethod
    def check_secret(cls, field: str, value: str) -> None:
        """Raise ValueError (never quoting ``value``) if a secret is unusable for ``field``."""
        if not value.strip():
            raise ValueError("must not be blank")


class BigQuerySection(Section):
    secret_fields = ("service_account_json",)
    required = ("service_account_json", "project")

    project: ProjectId | None = None
    default_dataset: DatasetName | None = None
    bucket: str | None = Field(None, description="GCS bucket for extracts and loads")
    location: str | None = Field(None, description="BigQuery location, like US, EU or europe-west1")
    allowed_projects: list[ProjectId] = Field(
        default_factory=list, max_length=100,
        description="projects members' tables may write to besides the configured one (empty: only it)",
    )

    @model_validator(mode="after")
    def _names(self) -> BigQuerySection:
        if self.bucket is not None and not _BUCKET.fullmatch(self.bucket):
            raise ValueError("bucket: lowercase letters, digits, '.', '_' and '-' (3 to 222)")
        if self.location is not None and not _LOCATION.fullmatch(self.location):
            raise ValueError("location: a BigQuery location such as US, EU or europe-west1")
        return self

    @classmethod
    def check_secret(cls, field: str, value: str) -> None:
        try:
            key = json.loads(value)
        except ValueError:
            raise ValueError("is not JSON (paste the whole service-account key file)") from None
        if not isinstance(key, dict) or key.get("type") != "service_account":
            raise ValueError('is not a service-account key (no "type": "service_account")')
        missing = [k for k in ("client_email", "private_key") if not key.get(k)]
        if missing:
            raise ValueError(f"the service-account key lacks {', '.join(missing)}")


class DatabaseSection(Section):
    """A source database for imports (and a target for exports when ``export`` is set)."""

    secret_fields = ("password",)
    required = ("driver", "dsn", "landing_dataset")

    driver: Literal["postgres", "mysql"]
    dsn: str = Field(min_length=1, max_length=2048, description="connection string WITHOUT the password")
    landing_dataset: DatasetName
    export: bool = False

    @model_validator(mode="after")
    def _dsn_has_no_password(self) -> DatabaseSection:
        # Never quote the DSN here: the point is that it might hold a password.
        if re.search(r"(^|[\s&?;])password\s*=", self.dsn, re.IGNORECASE):
            raise ValueError("dsn: must not contain a password; send it in the password field")
        if "://" in self.dsn:
            try:
                parts = urlsplit(self.dsn)
                has_password = parts.password is not None
            except ValueError:
                raise ValueError("dsn: does not parse as a URL") from None
            if has_password:
                raise ValueError("dsn: must not contain a password; send it in the password field")
            schemes = {"postgres": ("postgres", "postgresql"), "mysql": ("mysql",)}[self.driver]
            if parts.scheme not in schemes:
                raise ValueError(f"dsn: a {self.driver} URL starts with {schemes[0]}://")
        elif self.driver == "mysql":
            raise ValueError("dsn: a mysql DSN is a URL: mysql://user@host:3306/database")
        return self


_SLACK_CHANNEL = re.compile(r"#?[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{8,20}")


def _slack_channel(value: str) -> str:
    if not _SLACK_CHANNEL.fullmatch(value):
        raise ValueError(f"{value!r} is not a Slack channel (a name like #data-alerts, or an id like C0123ABCD)")
    return value


SlackChannel = Annotated[str, AfterValidator(_slack_channel)]


class SlackSection(Section):
    """Where alerts and cost digests go (docs/slack.md).

    A bot token (``xoxb-``) posts to any channel the bot was invited to and edits its messages (a
    failed run's message is updated as the run goes on); an incoming webhook posts only to its own
    channel and cannot edit, so the per-group and per-table channels do not apply to it. With
    both set, the bot token is used.
    """

    secret_fields = ("bot_token", "webhook_url")
    required = ()
    required_any: ClassVar[tuple[str, ...]] = ("bot_token", "webhook_url")  # one of them: configured

    channel: SlackChannel | Literal[""] = Field("", description="the default channel (bot token)")
    username: str = Field("maestro", max_length=80)
    url_prefix: HttpUrl | None = Field(None, description="base URL of this Maestro, for links in alerts")
    api_base_url: HttpUrl | None = Field(
        None, description="Slack Web API base URL (default https://slack.com/api/; tests point it elsewhere)"
    )
    group_channels: dict[str, SlackChannel] = Field(
        default_factory=dict, max_length=1000, description="group id -> channel for that group's tables and digests"
    )
    digests: list[DigestPeriod] = Field(default_factory=list, description="cost digests every group gets")
    group_digests: dict[str, list[DigestPeriod]] = Field(
        default_factory=dict, max_length=1000, description="group id -> its digests (overrides digests)"
    )
    digest_top: int = Field(5, ge=1, le=25, description="tables listed in a cost digest")

    @classmethod
    def check_secret(cls, field: str, value: str) -> None:
        if field == "bot_token":
            if not value.startswith("xox") or any(c.isspace() for c in value) or len(value) > 255:
                raise ValueError("is not a Slack token (it starts with xoxb-)")
            return
        _http_url(value, what="webhook URL", echo=False)


_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")
_REF_BAD = re.compile(r"[\x00-\x20~^:?*\[\\\x7f]|\.\.|@\{|//|^/|/$|\.lock$|^-|\.$|^@$")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_.-]+")


def _git_url(value: str) -> str:
    """Any git remote: https (http only to this machine), ssh (``ssh://`` or ``user@host:path``)
    or ``file://``. Never credentials in it: a token or a key goes in the secret fields, so the
    URL can be shown, logged and written to the clone's config."""
    value = value.strip()
    if _SCP_LIKE.fullmatch(value) and "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("the repository URL does not parse") from None
    if parts.scheme in ("https", "http"):
        return _http_url(value, what="repository URL", echo=False)
    if parts.scheme == "ssh":
        if not parts.hostname or parts.password is not None:
            raise ValueError("an ssh:// URL names a host and no password (the key goes in ssh_key)")
        return value
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("a file:// URL names an absolute path: file:///srv/git/catalog.git")
        return value
    raise ValueError("the repository URL must be https://, ssh://, user@host:path or file://")


def _branch(value: str) -> str:
    if _REF_BAD.search(value):
        raise ValueError(f"{value!r} is not a valid branch name")
    return value


def _path_prefix(value: str) -> str:
    value = value.strip().strip("/")
    if value and not all(_PREFIX_PART.fullmatch(p) and p not in (".", "..") for p in value.split("/")):
        raise ValueError("path_prefix: a relative folder (letters, digits, '_', '.', '-'), no '..'")
    return value


class GitSection(Section):
    """The catalog's repository (docs/git.md): Maestro commits every change to ``branch`` under
    ``path_prefix``; in mode ``sync`` it also applies what people commit there."""

    secret_fields = ("token", "ssh_key", "webhook_secret")
    required = ("repo_url",)

    repo_url: Annotated[str, AfterValidator(_git_url)] | None = Field(
        None, description="the remote: https://, ssh://, user@host:path or file:// (no credentials in it)"
    )
    branch: Annotated[str, AfterValidator(_branch)] = Field("main", min_length=1, max_length=255)
    path_prefix: Annotated[str, AfterValidator(_path_prefix)] = Field(
        "", max_length=255, description="folder of the repository that holds the catalog ('' = its root)"
    )
    mode: Literal["push", "sync"] = Field(
        "push", description="push: publish the catalog; sync: also apply the commits people push"
    )
    poll_interval: int = Field(60, ge=5, le=86400, description="seconds between fetches in mode sync")
    username: str = Field(
        "x-access-token", min_length=1, max_length=255, description="https user name sent with the token"
    )
    committer_name: str = Field("Maestro", min_length=1, max_length=255)
    committer_email: Email = "maestro@localhost"
    ssh_known_hosts: str = Field(
        "", max_length=65536,
        description="known_hosts lines for an ssh remote: the only host keys it may show (none: ssh is refused)",
    )

    @classmethod
    def check_secret(cls, field: str, value: str) -> None:
        super().check_secret(field, value)
        if field == "ssh_key" and "PRIVATE KEY" not in value:
            raise ValueError("is not a private key (paste the whole key file, BEGIN ... PRIVATE KEY)")
        if field == "token" and any(c.isspace() for c in value.strip()):
            raise ValueError("must not contain spaces")


class OAuthSection(Section):
    secret_fields = ("client_secret",)
    required = ("client_id", "client_secret", "redirect_uri", "allowed_domains")

    issuer: HttpUrl = "https://accounts.google.com"
    client_id: str | None = Field(None, min_length=1, max_length=512)
    redirect_uri: HttpUrl | None = None
    allowed_domains: list[Domain] = Field(default_factory=list, max_length=100)
    auto_enable_domains: list[Domain] = Field(default_factory=list, max_length=100)
    # Who becomes an administrator at their first login. Nobody else ever does by logging in
    # (being first proves nothing); later administrators are promoted by an administrator.
    initial_admins: list[Email] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _auto_enable_within_allowed(self) -> OAuthSection:
        outside = sorted(set(self.auto_enable_domains) - set(self.allowed_domains))
        if outside:
            raise ValueError(f"auto_enable_domains: not in allowed_domains: {', '.join(outside)}")
        strangers = sorted(e for e in self.initial_admins if e.rpartition("@")[2] not in self.allowed_domains)
        if strangers:
            raise ValueError(f"initial_admins: their domain is not in allowed_domains: {', '.join(strangers)}")
        return self


class PricingSection(Section):
    required = ("price_per_tib",)

    price_per_tib: float | None = Field(None, ge=0, le=10_000, description="USD per TiB billed")


SECTIONS: dict[str, type[Section]] = {
    "bigquery": BigQuerySection,
    "databases": DatabaseSection,
    "slack": SlackSection,
    "git": GitSection,
    "oauth": OAuthSection,
    "pricing": PricingSection,
}


class ConfigState(Event):
    """Base of the events that carry a stream's whole state."""

    __abstract__ = True

    section: SectionName
    name: DatabaseName | None = None  # the database, for section "databases"
    settings: dict[str, Any]
    secrets: dict[str, Ciphertext] = {}

    @model_validator(mode="after")
    def _secrets_stay_secret(self) -> ConfigState:
        secret_fields = set(SECTIONS[self.section].secret_fields)
        if unknown := sorted(set(self.secrets) - secret_fields):
            raise ValueError(f"secrets: {', '.join(unknown)} are not secret fields of {self.section}")
        if leaked := sorted(set(self.settings) & secret_fields):
            raise ValueError(f"settings: {', '.join(leaked)} are secret and belong in secrets")
        if (self.section == "databases") != (self.name is not None):
            raise ValueError("name: required for databases, and only for them")
        return self


class ConfigChanged(ConfigState):
    """An administrator changed a section. ``changed`` names the fields (never secret values)."""

    changed: list[str]


class ConfigSecretsRotated(ConfigState):
    """Every secret of the stream re-encrypted under the master secret with ``key_id``."""

    key_id: str


class ConfigSecretsCleared(ConfigState):
    """The master secret that sealed ``cleared`` was lost: they are gone and must be re-entered."""

    cleared: list[str]
    lost_key_id: str


class ConfigRemoved(Event):
    """A database configuration removed (its ciphertexts leave the read model)."""

    section: SectionName
    name: DatabaseName | None = None


CONFIG_EVENT_TYPES = frozenset(
    {"ConfigChanged", "ConfigSecretsRotated", "ConfigSecretsCleared", "ConfigRemoved"}
)


class ConfigNotApplied(Event):
    """A process could not apply a configuration change (the new BigQuery credentials do not
    connect, say) and keeps the previous one. On ``config-apply-<section>``, any version."""

    section: str
    reason: str

"""Configuration sections and events: validation rules, ciphertext-only secrets, log redaction."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import ValidationError

from maestro import logs
from maestro.adapters.secrets import SecretBox
from maestro.events.config import (
    SECTIONS,
    BigQuerySection,
    ConfigChanged,
    DatabaseSection,
    OAuthSection,
    SlackSection,
    config_stream,
)
from maestro.handlers.config.service import public_view
from maestro.handlers.config.view import ConfigEntry

BOX = SecretBox.from_secret(b"k" * 40)


def test_streams_are_derived_from_what_they_describe() -> None:
    assert config_stream("slack") == "config-slack"
    assert config_stream("databases", "crm") == "config-db-crm"


@pytest.mark.parametrize("dsn", [
    "postgresql://maestro:pw@db/crm",
    "postgres://maestro:@db/crm",  # an empty password is still a password field
    "host=db user=maestro password=pw dbname=crm",
    "host=db PASSWORD = pw",
    "postgresql://maestro@db/crm?sslmode=require&password=pw",
])
def test_a_dsn_must_not_carry_the_password(dsn: str) -> None:
    with pytest.raises(ValidationError) as info:
        DatabaseSection(driver="postgres", dsn=dsn, landing_dataset="raw")
    assert "must not contain a password" in str(info.value)


@pytest.mark.parametrize(("driver", "dsn"), [
    ("postgres", "postgresql://maestro@db:5432/crm?sslmode=require"),
    ("postgres", "host=db user=maestro dbname=crm"),
    ("mysql", "mysql://maestro@db:3306/shop"),
])
def test_dsns_without_password_pass(driver: str, dsn: str) -> None:
    assert DatabaseSection(driver=driver, dsn=dsn, landing_dataset="raw").dsn == dsn


def test_urls_are_https_without_credentials() -> None:
    assert SlackSection(url_prefix="https://maestro.acme.example").url_prefix
    assert SlackSection(url_prefix="http://localhost:8080").url_prefix  # this machine: development
    for bad in ("http://maestro.acme.example", "ftp://x", "https://u:p@maestro.acme.example", "nope"):
        with pytest.raises(ValidationError):
            SlackSection(url_prefix=bad)
    with pytest.raises(ValueError) as info:
        SlackSection.check_secret("webhook_url", "http://hooks.example/very-secret-path")
    assert "very-secret-path" not in str(info.value)


def test_service_account_keys_are_checked_without_quoting_them() -> None:
    good = json.dumps({"type": "service_account", "client_email": "a@b", "private_key": "k"})
    BigQuerySection.check_secret("service_account_json", good)
    for bad in ("{not json hidden-1", json.dumps({"type": "authorized_user", "x": "hidden-1"}),
                json.dumps({"type": "service_account", "private_key": "hidden-1"})):
        with pytest.raises(ValueError) as info:
            BigQuerySection.check_secret("service_account_json", bad)
        assert "hidden-1" not in str(info.value)


def test_domains_are_normalised_and_auto_enable_is_a_subset() -> None:
    oauth = OAuthSection(allowed_domains=["Example.COM", "@example.org"], auto_enable_domains=["example.com"])
    assert oauth.allowed_domains == ["example.com", "example.org"]
    with pytest.raises(ValidationError, match="auto_enable_domains: not in allowed_domains: other.com"):
        OAuthSection(allowed_domains=["example.com"], auto_enable_domains=["other.com"])
    for bad in ("example", "exa mple.com", "-x.com", ""):
        with pytest.raises(ValidationError):
            OAuthSection(allowed_domains=[bad])


def test_events_refuse_plaintext_where_ciphertext_belongs() -> None:
    token = BOX.encrypt("hook", context="config-slack/webhook_url")
    ConfigChanged(section="slack", settings={"channel": "#c"}, secrets={"webhook_url": token}, changed=["webhook_url"])
    with pytest.raises(ValidationError, match="string_pattern_mismatch|should match pattern"):
        ConfigChanged(section="slack", settings={}, secrets={"webhook_url": "https://hooks.example/x"}, changed=[])
    with pytest.raises(ValidationError, match="webhook_url are secret"):
        ConfigChanged(section="slack", settings={"webhook_url": "https://hooks.example/x"}, changed=[])
    with pytest.raises(ValidationError, match="not secret fields"):
        ConfigChanged(section="slack", settings={}, secrets={"channel": token}, changed=[])
    with pytest.raises(ValidationError, match="name: required for databases"):
        ConfigChanged(section="databases", settings={}, changed=[])


def test_every_section_has_defaults_or_requires_a_database_name() -> None:
    for name, cls in SECTIONS.items():
        if name != "databases":
            cls()  # a section never set reads as its defaults
        assert set(cls.secret_fields).isdisjoint(cls.model_fields)


def test_public_view_shows_whether_a_secret_is_set_never_its_value() -> None:
    token = BOX.encrypt("hook-value", context="config-slack/webhook_url")
    entry = ConfigEntry("config-slack", "slack", None, {"channel": "#c", "username": "m", "url_prefix": None},
                        {"webhook_url": token}, 2, updated_by="user:ann")
    view = public_view("slack", entry)
    assert view["webhook_url"] == {"set": True} and view["configured"] and view["version"] == 2
    assert token not in json.dumps(view) and "hook-value" not in json.dumps(view)
    empty = public_view("slack", None)
    assert empty["webhook_url"] == {"set": False} and not empty["configured"] and empty["version"] == 0


def test_log_lines_are_redacted_even_json_escaped() -> None:
    secret = 'pa"ss\nword-123'
    source = lambda: [secret]  # noqa: E731
    logs.add_redaction_source(source)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure_logging("INFO", "json")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("t").info("connecting with %s", secret, extra={"dsn": f"x {secret} y"})
        try:
            raise RuntimeError(f"boom {secret}")
        except RuntimeError:
            logging.getLogger("t").exception("failed")
        out = stream.getvalue()
        assert "word-123" not in out and out.count("***") >= 3
        assert all(json.loads(line)["level"] for line in out.splitlines() if line.startswith("{"))
    finally:
        logs.remove_redaction_source(source)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_oauth_initial_admins_are_emails_of_allowed_domains() -> None:
    oauth = OAuthSection(allowed_domains=["example.com"], initial_admins=[" Ana@Example.COM "])
    assert oauth.initial_admins == ["ana@example.com"]
    for bad in (["ana"], ["@example.com"], ["ana@nowhere"], ["eve@evil.org"]):
        with pytest.raises(ValidationError):
            OAuthSection(allowed_domains=["example.com"], initial_admins=bad)


def test_initial_admins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from maestro.handlers.people.login import oauth_from_settings
    from maestro.settings import Settings

    monkeypatch.setenv("MAESTRO_INITIAL_ADMINS", "Ana@example.com, bob@example.org")
    monkeypatch.setenv("MAESTRO_OIDC_CLIENT_ID", "id")
    monkeypatch.setenv("MAESTRO_OIDC_CLIENT_SECRET", "secret")
    config = oauth_from_settings(Settings())()
    assert config is not None and config.initial_admins == ("ana@example.com", "bob@example.org")

"""The master secret: where it comes from, a lost one reported at start-up, rotation, recovery, CLI."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from maestro.adapters.secrets import SecretBox, generate_secret
from maestro.cli import main
from maestro.errors import ConfigurationError, SecretUnavailable
from maestro.events import Metadata
from maestro.runtime import open_runtime
from maestro.settings import Settings

ME = Metadata(actor="system:tests")
HOOK = "https://hooks.slack.example/services/T0/B0/hook-plaintext-5151"
TOKEN = "git-token-plaintext-5151"
PASSWORD = "db-password-plaintext-5151"
SA_KEY = json.dumps({"type": "service_account", "client_email": "m@p.iam.gserviceaccount.com",
                     "private_key": "-----BEGIN PRIVATE KEY-----\nsa-key-plaintext-5151\n-----END PRIVATE KEY-----\n"})


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures the root logger (onto CliRunner's stream): put pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_development_generates_one_secret_file_readable_only_by_its_owner(runtime) -> None:
    path = runtime.settings.data_dir / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key_id = runtime.config.box.key_id
    again = await open_runtime(runtime.settings, follow=False)
    try:
        assert again.config.box.key_id == key_id  # the same file, not a new secret
    finally:
        await again.close()


async def test_a_lost_secret_is_reported_at_start_up_and_can_be_recovered(dsn: str, tmp_path: Path) -> None:
    settings = Settings(database_url=dsn, data_dir=tmp_path / "data", poll_interval=0.2)
    rt = await open_runtime(settings, follow=False)
    await rt.config_service.set_section("slack", {"webhook_url": HOOK, "channel": "#c"}, ME, partial=True)
    await rt.config_service.set_section("pricing", {"price_per_tib": 3}, ME, partial=True)
    old_kid = rt.config.box.key_id
    await rt.close()

    (tmp_path / "data" / "secret").unlink()  # lost
    with pytest.raises(SecretUnavailable) as info:
        await open_runtime(settings, follow=False)
    message = info.value.message
    assert "config-slack/webhook_url" in message and old_kid in message
    assert "original secret file is missing" in message and "maestro secrets reset" in message
    assert not (tmp_path / "data" / "secret").exists(), "the useless new secret must not stay in the way"

    wrong = tmp_path / "wrong"
    wrong.write_bytes(generate_secret())
    with pytest.raises(SecretUnavailable, match="secret file does not match"):
        await open_runtime(settings.with_overrides(secret_file=wrong), follow=False)

    # Lost for good: record it, then the new secret is the one in use.
    rt = await open_runtime(settings.with_overrides(secret_file=wrong), follow=False, check_secrets=False)
    try:
        assert await rt.config_service.clear_unreadable(ME) == ["config-slack/webhook_url"]
    finally:
        await rt.close()
    rt = await open_runtime(settings.with_overrides(secret_file=wrong), follow=False)
    try:
        assert not rt.config.is_set("slack", "webhook_url") and rt.config.get("slack").channel == "#c"
        assert rt.config.price_per_tib == 3
        last = (await rt.store.read("config-slack"))[-1]
        assert last.type == "ConfigSecretsCleared" and last.event.cleared == ["webhook_url"]
        assert last.event.lost_key_id == old_kid
    finally:
        await rt.close()


async def test_production_needs_a_secret_file(dsn: str, tmp_path: Path) -> None:
    settings = Settings(database_url=dsn, data_dir=tmp_path / "d", google_project="acme-prod")
    with pytest.raises(ConfigurationError, match="MAESTRO_SECRET_FILE"):
        await open_runtime(settings, follow=False)
    assert not (tmp_path / "d" / "secret").exists()


async def test_a_secret_on_the_command_line_works_with_a_warning(dsn: str, tmp_path: Path, caplog) -> None:
    value = generate_secret().decode()
    settings = Settings(database_url=dsn, data_dir=tmp_path / "d", secret=SecretStr(value))
    with caplog.at_level(logging.WARNING):
        rt = await open_runtime(settings, follow=False)
    await rt.close()
    assert rt.config.box.key_id == SecretBox.from_secret(value.encode()).key_id
    assert "development only" in caplog.text and value not in caplog.text and value not in repr(settings)
    assert not (tmp_path / "d" / "secret").exists()


def test_the_cli_configures_rotates_and_refuses_secrets_on_the_command_line(dsn: str, tmp_path: Path, restore_logging) -> None:
    cli = CliRunner()
    base = ["--database-url", dsn, "--data-dir", str(tmp_path / "data")]
    outputs: list[str] = []

    def run(*args: str, input: str | None = None, code: int = 0, db: bool = True):
        result = cli.invoke(main, [*args, *(base if db else [])], input=input)
        outputs.append(result.output)
        assert result.exit_code == code, result.output
        return result

    run("config", "set", "slack", "channel=#data", "--prompt", "webhook_url", input=HOOK + "\n")
    refused = run("config", "set", "slack", f"webhook_url={HOOK}", code=2)
    assert "--prompt webhook_url" in refused.output
    key_file, token_file = tmp_path / "sa.json", tmp_path / "token"
    key_file.write_text(SA_KEY)
    token_file.write_text(TOKEN + "\n")
    run("config", "set", "bigquery", "project=acme-data", "location=EU", "--from-file", f"service_account_json={key_file}")
    run("config", "set", "git", "repo_url=https://github.com/acme/tables", "--from-file", f"token={token_file}")
    run("config", "set", "databases", "crm", "driver=mysql", "dsn=mysql://maestro@db:3306/crm",
        "landing_dataset=crm_raw", "--prompt", "password", input=PASSWORD + "\n")
    run("config", "set", "databases", "crm", "export=true")
    run("config", "set", "oauth", "client_id=cid", "allowed_domains=example.com, example.org", "auto_enable_domains=example.com")
    bad = run("config", "set", "pricing", "price_per_tib=-2", code=2)
    assert "price_per_tib" in bad.output

    shown = json.loads(run("config", "show", "--json").stdout)
    by_name = {v.get("section") or v["name"]: v for v in shown}
    assert by_name["slack"]["webhook_url"] == {"set": True} and by_name["slack"]["channel"] == "#data"
    assert by_name["bigquery"]["configured"] and by_name["bigquery"]["location"] == "EU"
    assert by_name["crm"]["export"] is True and by_name["crm"]["password"] == {"set": True}
    assert by_name["oauth"]["allowed_domains"] == ["example.com", "example.org"]
    assert not by_name["oauth"]["configured"]  # no client secret yet
    assert "(secret, set)" in run("config", "show", "slack").stdout

    new_file = tmp_path / "new-secret"
    run("secrets", "generate", str(new_file), db=False)
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
    run("secrets", "generate", str(new_file), code=2, db=False)  # never overwrites
    rotated = run("secrets", "rotate", "--new-secret-file", str(new_file))
    assert "re-encrypted 4 credential(s) in 4 stream(s)" in rotated.output
    assert "destroy the old secret file" in rotated.output

    stale = run("config", "show", code=2)  # the old secret no longer opens anything
    assert "secret file does not match" in stale.output
    run("config", "show", "--secret-file", str(new_file))
    again = run("secrets", "rotate", "--new-secret-file", str(new_file), "--secret-file", str(new_file), code=2)
    assert "in use already" in again.output

    everything = "\n".join(outputs)
    for secret in (HOOK, TOKEN, PASSWORD, "sa-key-plaintext-5151"):
        assert secret not in everything

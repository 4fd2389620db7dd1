"""Zero secrets in events, logs or API responses, after a full scenario.

Every section is configured with distinctive plaintext secrets (all containing MARKER) through the
API and the CLI, bad requests carrying secrets are refused, everything is read back through every
GET route, the master secret is rotated and the runtime restarted on the new one. Then the whole
event log (data and metadata), every captured log record and CLI output, every response body and,
for good measure, every row of every table are scanned: the marker must appear nowhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from maestro.adapters.secrets import SecretBox
from maestro.cli import main
from maestro.events import Metadata
from maestro.events.config import SINGLE_SECTIONS
from maestro.handlers.config.secret_file import write_new_secret
from maestro.http.app import create_app
from maestro.http.routing import ROUTES
from maestro.runtime import Runtime, open_runtime
from maestro.settings import Settings

MARKER = "SCANSECRET"
# Besides the marker, each secret ends in a random tail that is searched for on its own, so that
# a secret cut short (a prefix stripped, a suffix logged) is found as well.
TAILS = {kind: secrets.token_hex(8) for kind in ("sa-key-id", "sa-key", "slack", "git", "oauth", "crm", "shop")}
SA_KEY = json.dumps({
    "type": "service_account", "project_id": "acme-data", "private_key_id": f"{MARKER}-{TAILS['sa-key-id']}",
    "private_key": f"-----BEGIN PRIVATE KEY-----\n{MARKER}-{TAILS['sa-key']}\n-----END PRIVATE KEY-----\n",
    "client_email": "maestro@acme-data.iam.gserviceaccount.com",
})
SECRETS = {
    ("bigquery", "service_account_json", None): SA_KEY,
    ("slack", "webhook_url", None): f"https://hooks.slack.example/services/T1/B1/{MARKER}-{TAILS['slack']}",
    ("git", "token", None): f"{MARKER}-{TAILS['git']}",
    ("oauth", "client_secret", None): f"{MARKER}-{TAILS['oauth']}",
    ("databases", "password", "crm"): f"{MARKER}-{TAILS['crm']}",
    ("databases", "password", "shop"): f"{MARKER}-{TAILS['shop']}",
}


class Capture(logging.Handler):
    """Every record in full: message, arguments, extra fields and exception text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._plain = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self._plain.format(record) + " " + repr(record.__dict__))


class Scenario:
    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.settings = Settings(database_url=dsn, data_dir=tmp_path / "data", poll_interval=0.1, log_level="DEBUG")
        self.base = ["--database-url", dsn, "--data-dir", str(tmp_path / "data")]
        self.tmp = tmp_path
        self.responses: list[str] = []
        self.cli_output: list[str] = []
        self.capture = Capture()
        self.runtime: Runtime | None = None
        self.client: TestClient | None = None

    def listen(self) -> None:
        root = logging.getLogger()
        if self.capture not in root.handlers:
            root.addHandler(self.capture)
        root.setLevel(logging.DEBUG)

    async def start(self, **overrides: Any) -> None:
        self.runtime = await open_runtime(self.settings.with_overrides(**overrides))
        _, token = await self.runtime.tokens.create("admin-1", "scan", Metadata(actor="system:tests"), admin=True)
        app = create_app(self.runtime.settings, runtime=self.runtime)
        self.client = TestClient(TestServer(app), headers={"Authorization": f"Bearer {token}"})
        await self.client.start_server()

    async def stop(self) -> None:
        await self.client.close()
        await self.runtime.close()

    async def call(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> Any:
        resp = await self.client.request(method, path, **kwargs)
        text = await resp.text()
        self.responses.append(f"{method} {path} {resp.status} {dict(resp.headers)} {text}")
        if expect is not None:
            assert resp.status == expect, f"{method} {path}: {resp.status} {text}"
        return json.loads(text) if resp.content_type == "application/json" else text

    async def cli(self, *args: str, input: str | None = None) -> None:
        # The CLI runs asyncio.run itself: give it a thread. It points the root logger at its own
        # captured stream (scanned below as CLI output); listen again afterwards.
        result = await asyncio.to_thread(CliRunner().invoke, main, [*args, *self.base], input=input)
        self.cli_output.append(result.output)
        self.listen()
        assert result.exit_code == 0, result.output

    async def read_everything(self, table_id: str) -> int:
        """Every GET route of the API (and /healthz, /metrics) with the path parameters we can
        fill; returns how many were called. Not /login: it would go to the identity provider."""
        values = {"section": list(SINGLE_SECTIONS), "name": ["crm", "shop"], "table_id": [table_id]}
        called = 0
        for route in ROUTES:
            if route.method != "GET" or not (route.path.startswith("/api/") or route.path in ("/healthz", "/metrics")):
                continue
            params = re.findall(r"{(\w+)(?::[^}]*)?}", route.path)
            if any(p not in values for p in params):
                continue
            paths = [route.path]
            for p in params:
                paths = [re.sub(r"{%s(?::[^}]*)?}" % p, v, path) for path in paths for v in values[p]]
            for path in paths:
                await self.call("GET", path)
                called += 1
        return called


async def test_no_secret_in_events_logs_or_responses(dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    s = Scenario(dsn, tmp_path)
    s.listen()
    try:
        await s.start()
        # -------- configure through the API (one secret first set, then changed)
        await s.call("PUT", "/api/v1/config/slack", 200, json={"webhook_url": f"https://hooks.slack.example/{MARKER}-slack-1", "channel": "#data"})
        await s.call("PUT", "/api/v1/config/slack", 200, json={"webhook_url": SECRETS["slack", "webhook_url", None], "channel": "#data", "url_prefix": "https://maestro.acme.example"})
        await s.call("PUT", "/api/v1/config/bigquery", 200, json={"service_account_json": SA_KEY, "project": "acme-data", "bucket": "acme-extracts", "location": "EU"})
        await s.call("PUT", "/api/v1/config/oauth", 200, json={
            "client_id": "acme.apps.example", "client_secret": SECRETS["oauth", "client_secret", None],
            "redirect_uri": "https://maestro.acme.example/auth/callback", "allowed_domains": ["acme.example"]})
        await s.call("PUT", "/api/v1/config/pricing", 200, json={"price_per_tib": 5.5})
        await s.call("POST", "/api/v1/databases", 201, json={
            "name": "crm", "driver": "postgres", "dsn": "postgresql://maestro@crm.internal/crm",
            "password": SECRETS["databases", "password", "crm"], "landing_dataset": "crm_raw"})
        await s.call("PATCH", "/api/v1/databases/crm", 200, json={"export": True, "password": ""})
        # -------- bad requests that carry secrets
        await s.call("PUT", "/api/v1/config/slack", 422, json={"webhook_url": f"http://hooks.example/{MARKER}-bad-hook"})
        await s.call("PUT", "/api/v1/config/bigquery", 422, json={"service_account_json": f'{{"type": "nope", "k": "{MARKER}-bad-sa"}}'})
        await s.call("PUT", "/api/v1/config/git", 422, json={"repo_url": f"https://x:{MARKER}-url-token@github.com/a/b"})
        await s.call("PUT", "/api/v1/config/git", 422, data=f'{{"token": "{MARKER}-broken-json"'.encode(), headers={"Content-Type": "application/json"})
        await s.call("POST", "/api/v1/databases", 422, json={
            "name": "bad", "driver": "postgres", "dsn": f"postgresql://maestro:{MARKER}-dsn-pw@db/x", "landing_dataset": "x"})
        # -------- configure through the CLI
        token_file = tmp_path / "git-token"
        token_file.write_text(SECRETS["git", "token", None] + "\n")
        await s.cli("config", "set", "git", "repo_url=https://github.com/acme/tables", "--from-file", f"token={token_file}")
        await s.cli("config", "set", "databases", "shop", "driver=mysql", "dsn=mysql://maestro@shop.internal:3306/shop",
                    "landing_dataset=shop_raw", "--prompt", "password", input=SECRETS["databases", "password", "shop"] + "\n")
        await s.cli("config", "show")
        await s.cli("config", "show", "--json")
        for _ in range(100):  # the CLI wrote from another process: the server follows
            if s.runtime.config.database("shop") is not None:
                break
            await asyncio.sleep(0.02)
        table = await s.call("POST", "/api/v1/tables", 201, json={
            "dataset": "crm_raw", "name": "accounts", "kind": "import",
            "import": {"source_database": "crm", "source_table": "accounts"}})
        assert await s.read_everything(table["id"]) >= 15
        for (section, field, name), plaintext in SECRETS.items():
            assert s.runtime.config.secret(section, field, name=name) == plaintext

        # -------- rotate, restart on the new secret, read everything again
        new_secret = tmp_path / "new-secret"
        assert write_new_secret(new_secret)
        await s.cli("secrets", "rotate", "--new-secret-file", str(new_secret))
        new_key = SecretBox.from_file(new_secret).key_id
        for _ in range(250):  # the old server sees the rotation (and logs that it must restart)
            if s.runtime.config.entry("slack").secrets["webhook_url"].split(".")[1] == new_key:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the running server never saw the rotation")
        await s.stop()
        await s.start(secret_file=new_secret)
        for (section, field, name), plaintext in SECRETS.items():
            assert s.runtime.config.secret(section, field, name=name) == plaintext
        await s.call("PUT", "/api/v1/config/slack", 200, json={"username": "maestro-bot"})
        assert await s.read_everything(table["id"]) >= 15
        pool = s.runtime.pool

        # -------- scan
        events = await pool.fetch("SELECT type, data::text AS data, metadata::text AS metadata FROM events ORDER BY position")
        tables = await pool.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        rows = {t["table_name"]: await pool.fetch(f'SELECT t::text AS row FROM "{t["table_name"]}" t') for t in tables}
    finally:
        if s.client is not None:
            await s.stop()
        root.handlers[:] = handlers
        root.setLevel(level)

    config_events = [e for e in events if e["type"].startswith("Config")]
    assert len(config_events) >= 12 and any(e["type"] == "ConfigSecretsRotated" for e in config_events)
    assert len(s.responses) >= 40 and len(s.capture.lines) >= 20 and len(s.cli_output) == 5
    assert any("configuration changed" in line for line in s.capture.lines), "the log capture saw nothing"
    # Logged while the CLI (which points the root logger at its own output) or the test listens.
    assert any("re-encrypted under another master secret" in line for line in s.capture.lines + s.cli_output)

    haystacks = {
        "event data": [e["data"] for e in events],
        "event metadata": [e["metadata"] for e in events],
        "log records": s.capture.lines + [caplog.text],
        "CLI output (with its JSON logs)": s.cli_output,
        "API responses": s.responses,
        "database rows": [r["row"] for found in rows.values() for r in found],
    }
    for where, texts in haystacks.items():
        needles = [MARKER.lower(), *TAILS.values()]
        leaks = [t for t in texts if any(n in t.lower() for n in needles)]
        assert not leaks, f"a secret leaked into {where}: {leaks[0][:300]}"
    assert rows["config_entries"], "the read model was scanned"

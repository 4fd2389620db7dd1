"""`maestro serve` as a real process: embedded PostgreSQL, JSON logs, graceful shutdown, restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

MAESTRO = str(Path(sys.executable).with_name("maestro"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env["MAESTRO_DATA_DIR"] = str(data_dir)
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [MAESTRO, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _get(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def _health(port: int) -> dict:
    """/healthz's answer, 200 or 503 alike."""
    try:
        return _get(f"http://127.0.0.1:{port}/healthz")
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def _wait_healthy(port: int, proc: subprocess.Popen, log: Path, *, down: list[str] | None = None) -> dict:
    """Until /healthz says ok (or, with ``down``, degraded with exactly those components down)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            body = _health(port)
            if (body["status"] == "ok") if down is None else body.get("down") == down:
                return body
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("maestro serve did not become healthy:\n" + log.read_text())


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


async def test_serve_embedded_persists_and_shuts_down_cleanly(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    port = _free_port()
    proc = _start(data_dir, port, log)
    try:
        _wait_healthy(port, proc, log)
        # First start: a bootstrap admin token, readable only by its owner.
        token_file = data_dir / "bootstrap-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        events = _get(f"http://127.0.0.1:{port}/api/v1/events", token)["events"]
        # The token acts as the service user bootstrap-admin, an administrator made for it; with
        # no identity provider, start-up also makes a one-time login link for the UI.
        assert [e["type"] for e in events] == ["ServiceUserCreated", "ApiTokenCreated", "LoginLinkCreated"]
        assert "/login/link" in log.read_text()
        assert events[0]["data"] == {"user_id": "bootstrap-admin", "name": "bootstrap admin", "admin": True}
        assert "secret_hash" in events[1]["data"] and token.split("_")[-1] not in json.dumps(events)
        # Write one event straight through the embedded server's socket.
        dsn = f"postgresql://postgres:@/maestro?host={data_dir / 'postgres'}"
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "SELECT * FROM events_append('probe-1', -1, ARRAY['ProbeRecorded'], ARRAY[1]::smallint[], "
            "ARRAY['{\"n\": 1}'::jsonb], ARRAY['{\"actor\": \"test\"}'::jsonb], now())"
        )
        await conn.close()
    finally:
        code = _stop(proc)
    assert code == 0, log.read_text()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "embedded PostgreSQL left running"

    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    records = [json.loads(ln) for ln in lines]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    proc = _start(data_dir, port, log)
    try:
        # The probe's type is unknown to this Maestro (as one written by a newer release): the
        # projection that reads every event cannot pass it, and health says so by name.
        body = _wait_healthy(port, proc, log, down=["projection:streams"])
        assert "ProbeRecorded" in body["components"]["projection:streams"]["detail"]
        events = _get(f"http://127.0.0.1:{port}/api/v1/events", token)["events"]
        streams = [e["stream_id"] for e in events]
        assert [s for s in streams if not s.startswith("login-link-")] == [
            "user-bootstrap-admin", "token-bootstrap", "probe-1"]
        assert len([s for s in streams if s.startswith("login-link-")]) == 2  # one link per start
    finally:
        assert _stop(proc) == 0


def test_token_create_cli_prints_a_working_token(dsn: str) -> None:
    from click.testing import CliRunner

    from maestro.cli import main

    result = CliRunner().invoke(main, ["token", "create", "--database-url", dsn, "--user", "ann", "--admin"])
    # A missing user is created as a service user; --admin makes it an administrator.
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[0]
    assert token.startswith("mae_")

    async def verify() -> str:
        from maestro.adapters import postgres
        from maestro.events.store import EventStore
        from maestro.handlers.people.tokens import TokenService
        from maestro.handlers.people.users import UserService

        pool = await postgres.create_pool(dsn, min_size=1, max_size=2)
        try:
            store = EventStore(pool)
            who = await TokenService(store, UserService(store)).verify(token)
            assert who.admin
            return who.user_id
        finally:
            await pool.close()

    import asyncio

    assert asyncio.run(verify()) == "ann"

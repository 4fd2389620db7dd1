"""``maestro serve`` tells people where it listens, where the data lives and how to log in:
as readable text when stderr is a terminal (a real pseudo-terminal here), as JSON otherwise."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from served import MAESTRO, child_env, free_port, served

pytestmark = pytest.mark.slow


def test_json_when_stderr_is_a_file(pg_admin_dsn: str, tmp_path: Path) -> None:
    with served(pg_admin_dsn, tmp_path) as server:
        records = [json.loads(line) for line in server.tail(200_000).splitlines() if line.startswith("{")]
        (banner,) = [r for r in records if r["message"].startswith("Maestro is listening")]
        assert banner["listen"] == server.url and banner["data_dir"] == str(server.data_dir)
        password = urlsplit(server.dsn).password
        assert banner["database"].startswith("postgresql://")
        assert not password or (password not in banner["database"] and ":***@" in banner["database"])
        assert any("bootstrap-token" in how for how in banner["login"])
        assert server.admin_token not in server.tail(200_000)  # the token itself is never logged


def test_text_on_a_terminal(tmp_path: Path) -> None:
    port = free_port()
    primary, secondary = os.openpty()
    env = child_env(MAESTRO_DATA_DIR=str(tmp_path / "data"), MAESTRO_LOCAL_STACK="false")
    proc = subprocess.Popen([MAESTRO, "serve", "--port", str(port)], env=env, stdout=secondary, stderr=secondary)
    os.close(secondary)
    out = b""
    try:
        deadline = time.monotonic() + 90
        while b"log in:" not in out and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    out += os.read(primary, 65536)
                except OSError:
                    break
        text = out.decode(errors="replace")
        assert f"Maestro is listening on http://127.0.0.1:{port}" in text, text
        assert "embedded PostgreSQL in" in text and "not started (no project, local stack off)" in text
        assert "maestro login --url" in text
        assert not any(line.lstrip().startswith("{") for line in text.splitlines()), text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        os.close(primary)

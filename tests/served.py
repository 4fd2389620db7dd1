"""A real ``maestro serve`` for client tests: its own database, data dir and local stack.

The server is a child process on a free port, as a user would run it; its bootstrap token is the
administrator's. :func:`service_token` makes a user with a token through the real CLI
(``maestro token create --user``), the way an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from dsns import with_database

MAESTRO = str(Path(sys.executable).with_name("maestro"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child ``maestro``: our settings only, plus where the local stack lives."""
    keep = ("MAESTRO_LOCALBQ_VENV", "MAESTRO_FAKE_GCS_SERVER")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_") or k in keep}
    env.update(extra)
    return env


class Served:
    def __init__(self, dsn: str, data_dir: Path, **settings: str) -> None:
        self.dsn, self.data_dir, self.port = dsn, data_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.env = child_env(MAESTRO_DATA_DIR=str(data_dir), MAESTRO_DATABASE_URL=dsn, MAESTRO_LOG_LEVEL="INFO",
                             MAESTRO_POLL_INTERVAL="0.2", MAESTRO_SCHEDULER_TICK="0.2", **settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([MAESTRO, "serve", "--port", str(self.port)], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"maestro serve exited:\n{self.tail()}"
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                    if json.loads(resp.read())["status"] == "ok":
                        return
            time.sleep(0.05)
        raise AssertionError(f"maestro serve did not become healthy:\n{self.tail()}")

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "bootstrap-token").read_text().strip()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        stack_of(self.data_dir)

    def tail(self, limit: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-limit:] if self.log.exists() else "(no log)"

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token or self.admin_token}"}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: {error.code} {error.read()[:2000]!r}") from None

    def service_token(self, user_id: str, *, groups: tuple[str, ...] = ()) -> str:
        """A service user ``user_id`` (created by the CLI) in ``groups``, and a token of theirs."""
        done = subprocess.run([MAESTRO, "token", "create", "--user", user_id, "--name", "tests"],
                              env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        for group_id in groups:
            self.call("POST", f"/api/v1/groups/{group_id}/members/{user_id}")
        return done.stdout.strip()


def stack_of(data_dir: Path) -> None:
    """Stop whatever local stack the server left on its data dir (a SIGTERM stops its own)."""
    from maestro.adapters.localstack import _recorded_stack

    stack = _recorded_stack(data_dir / "localstack", "maestro-local")
    if stack is not None and stack.alive():
        stack.stop_sync()


@contextlib.contextmanager
def served(admin_dsn: str, root: Path, **settings: str) -> Iterator[Served]:
    """A database of its own and a ``maestro serve`` on it, stopped and dropped afterwards."""
    name = f"maestro_srv_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    server = Served(with_database(admin_dsn, name), root / "data", **settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

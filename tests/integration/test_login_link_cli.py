"""`maestro serve` prints a one-time login link in local mode; `maestro login-link` makes another."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from test_serve import MAESTRO, _free_port, _start, _stop, _wait_healthy

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/login/link\?token=ml_[A-Za-z0-9_-]+)")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


def _use(link: str) -> tuple[int, str]:
    """POST the link's token as its page's button does; (status, Set-Cookie headers)."""
    parts = urllib.parse.urlsplit(link)
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    data = urllib.parse.urlencode({"token": token, "return_to": "/tables"}).encode()
    request = urllib.request.Request(f"{parts.scheme}://{parts.netloc}/login/link", data=data)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, " ".join(resp.headers.get_all("Set-Cookie") or [])
    except urllib.error.HTTPError as exc:
        return exc.code, " ".join(exc.headers.get_all("Set-Cookie") or [])


def _link_in(log: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = LINK.search(log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError("no login link printed:\n" + log.read_text())


async def test_serve_prints_a_link_and_login_link_makes_another(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "serve.log"
    port = _free_port()
    proc = _start(data_dir, port, log)
    try:
        _wait_healthy(port, proc, log)
        link = _link_in(log)
        assert link.startswith(f"http://127.0.0.1:{port}/")
        status, cookies = _use(link)
        assert status == 303 and "__Host-maestro_session=" in cookies
        assert _use(link)[0] == 401  # once only
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
        env["MAESTRO_DATA_DIR"] = str(data_dir)
        # The CLI reaches the serving process's embedded database through its data directory.
        env["MAESTRO_PORT"] = str(port)  # the link names the address the server listens at
        made = subprocess.run([MAESTRO, "login-link", "--minutes", "5"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        second = made.stdout.strip()
        assert LINK.fullmatch(second) and second != link and "valid 5 minutes" in made.stderr
        assert _use(second)[0] == 303
    finally:
        assert _stop(proc) == 0

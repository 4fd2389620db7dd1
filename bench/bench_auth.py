"""What authentication costs per API request: a token and a session against no authentication.

One process, one database, one aiohttp server on a local port, one keep-alive HTTP client, the same
trivial handler registered three times under three rules, so the difference is the middleware
and nothing else:

* ``/bench/public`` (rule public): no credentials looked at: the baseline;
* ``/bench/read`` with ``Authorization: Bearer <token>`` (rule read): the token's row joined with its
  user and groups, the hash compared;
* ``/bench/read`` with the session cookie: the same for the session;
* ``/api/v1/me`` with the token: a real route (authentication plus the handler's own query).

Requests are sequential (latency, not throughput), interleaved round-robin so drift in machine load
hits every variant alike. Target: authentication adds <= 1 ms p50.

    .venv/bin/python -m bench.bench_auth [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.common import bench_database, percentile
from maestro.events.model import Metadata
from maestro.http.app import create_app
from maestro.http.auth import SESSION_COOKIE
from maestro.http.routing import Route, register
from maestro.runtime import open_runtime
from maestro.settings import Settings

TARGET_MS = 1.0


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def measure(requests: int) -> None:
    async with bench_database() as dsn:
        with tempfile.TemporaryDirectory(prefix="maestro-bench-auth-") as tmp:
            settings = Settings(database_url=dsn, data_dir=Path(tmp), local_stack=False, poll_interval=0.5)
            runtime = await open_runtime(settings)
            try:
                await run(runtime, settings, requests)
            finally:
                await runtime.close()


async def run(runtime, settings: Settings, requests: int) -> None:
    actor = Metadata(actor="system:bench")
    group = await runtime.users.create_group("bench", actor)
    await runtime.users.ensure_service_user("bencher", "bench user", actor)
    await runtime.users.add_member(group.group_id, "bencher", actor)
    _, token = await runtime.tokens.create("bencher", "bench", actor)
    cookie, _ = await runtime.sessions.start("bencher")

    app = create_app(settings, runtime=runtime)
    register(app, [Route("GET", "/bench/public", ok, "baseline", rule="public"),
                   Route("GET", "/bench/read", ok, "authenticated", rule="read")])
    server = TestServer(app)
    await server.start_server()
    variants = {
        "no auth (public route)": ("/bench/public", {}),
        "API token (Bearer)": ("/bench/read", {"Authorization": f"Bearer {token}"}),
        "session cookie": ("/bench/read", {"Cookie": f"{SESSION_COOKIE}={cookie}"}),
        "GET /api/v1/me with the token": ("/api/v1/me", {"Authorization": f"Bearer {token}"}),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(requests + 200):  # the first 200 rounds warm up connections and caches
                for name, (path, headers) in variants.items():
                    t0 = time.perf_counter()
                    async with http.get(server.make_url(path), headers=headers) as resp:
                        await resp.read()
                        assert resp.status == 200, (name, resp.status)
                    if i >= 200:
                        timings[name].append((time.perf_counter() - t0) * 1000)
    finally:
        await server.close()

    base = percentile(timings["no auth (public route)"], 50)
    print(f"Authentication cost per request ({requests} sequential requests per variant, interleaved)")
    print(f"  {'variant':<34} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p50 delta':>10}")
    for name, values in timings.items():
        p50 = percentile(values, 50)
        delta = "" if name.startswith("no auth") else f"{p50 - base:+.3f}"
        print(f"  {name:<34} {p50:>8.3f} {percentile(values, 90):>8.3f} {percentile(values, 99):>8.3f} {delta:>10}")
    worst = max(percentile(timings[n], 50) for n in ("API token (Bearer)", "session cookie")) - base
    print(f"  target: authentication adds <= {TARGET_MS:.1f} ms p50 -> worst delta {worst:.3f} ms: "
          f"{'met' if worst <= TARGET_MS else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(measure(args.requests))


if __name__ == "__main__":
    main()

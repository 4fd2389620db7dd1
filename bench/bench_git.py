"""Git benchmarks: the first export of a 2,000-table catalog, the round trip, and edit -> pushed.

Into a fresh database, ``maestro apply`` of bench_catalog's 2,000 generated tables, then against
a local bare repository (``file://``, the real ``git``):

* ``first export``: one worker cycle into an empty repository — the whole catalog rendered as
  ``maestro export`` writes it, committed and pushed. Baseline in the same run: ``maestro
  export`` into a folder plus ``git add``/``commit``/``push`` of it by hand;
* ``round trip``: clone the repository, read the clone as ``maestro apply`` does and plan it
  against the catalog with ``--prune``: the plan must be empty;
* ``edit -> pushed``: the git reactor running (as on the leader), ``PATCH /api/v1/tables/{id}``
  over HTTP, then the time until the remote branch has moved. Baseline: one ``git commit`` and
  ``git push`` of one file by hand.

Targets: first export <= 10 s; round trip changes nothing; edit -> pushed p50 <= 2 s.

    .venv/bin/python -m bench.bench_git [--tables 2000] [--edits 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.bench_catalog import generate, load, open_catalog, write_folder
from bench.common import bench_database, percentile

GIT_ENV = {"PATH": os.defpath, "HOME": "/nonexistent", "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def bare(path: Path) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "--bare", "-b", "main", ".")
    return f"file://{path}"


async def baseline_export(runtime, tmp: Path) -> float:
    """``maestro export`` + commit + push by hand, into another empty repository."""
    from maestro.handlers.catalog import apply, folder

    url = bare(tmp / "baseline.git")
    work = tmp / "baseline"
    t0 = time.perf_counter()
    folder.export(await apply.load_rows(runtime.catalog), work)
    git(work, "init", "-q", "-b", "main", ".")
    git(work, "add", "-A", ".")
    git(work, "commit", "-q", "-m", "export")
    git(work, "push", "-q", url, "main")
    return time.perf_counter() - t0


def baseline_one_commit(tmp: Path) -> float:
    url = bare(tmp / "one.git")
    work = tmp / "one"
    work.mkdir()
    git(work, "init", "-q", "-b", "main", ".")
    times = []
    for n in range(10):
        (work / "t.sql").write_text(f"SELECT {n}\n")
        t0 = time.perf_counter()
        git(work, "add", "-A", ".")
        git(work, "commit", "-q", "-m", f"edit {n}")
        git(work, "push", "-q", url, "main")
        times.append(time.perf_counter() - t0)
    return percentile(times, 50)


async def main(count: int, edits: int) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from maestro.events.model import Metadata
    from maestro.handlers.catalog import apply, folder
    from maestro.http.app import create_app
    from maestro.handlers.git.reactor import GitReactor
    from maestro.handlers.git.sync import GitSync
    from maestro.handlers.notify.reactor import ReactorHost

    print(f"git benchmarks ({load()})")
    with tempfile.TemporaryDirectory(prefix="maestro-bench-git-") as name:
        tmp = Path(name)
        tables = generate(count)
        write_folder(tmp / "folder", tables)
        async with bench_database() as dsn:
            runtime = await open_catalog(dsn, tmp / "data")
            try:
                specs = folder.read_folder(tmp / "folder", default_project=runtime.settings.project)
                report = await apply.execute(apply.plan(specs, await apply.load_rows(runtime.catalog), False),
                                             runtime.catalog, Metadata(actor="cli:bench"))
                url = bare(tmp / "remote.git")
                await runtime.config_service.set_section(
                    "git", {"repo_url": url, "mode": "sync"}, Metadata(actor="cli:bench"), partial=False)
                sync = GitSync(runtime.store, runtime.catalog, runtime.config, tmp / "data")

                t0 = time.perf_counter()
                await sync.cycle()
                first = time.perf_counter() - t0
                files = len(git(tmp / "remote.git", "ls-tree", "-r", "--name-only", "main").split())
                base = await baseline_export(runtime, tmp)
                print(f"  first export of {len(report.created):,} tables ({files:,} files) into an empty repository: "
                      f"{first:6.2f} s   baseline export+commit+push by hand {base:.2f} s "
                      f"(x{first / base:.2f})   target <= 10 s: {'ok' if first <= 10 else 'MISSED'}")

                t0 = time.perf_counter()
                git(tmp, "clone", "-q", url, "clone")
                cloned = folder.read_folder(tmp / "clone", default_project=runtime.settings.project)
                plan = apply.plan(cloned, await apply.load_rows(runtime.catalog), prune=True)
                trip = time.perf_counter() - t0
                print(f"  round trip export -> clone -> apply --prune: {len(plan.changes)} changes, "
                      f"{plan.unchanged:,} unchanged ({trip:.2f} s)   target 0 changes: "
                      f"{'ok' if not plan.has_changes else 'MISSED'}")

                host = ReactorHost(runtime.store, runtime.health, [GitReactor(sync)])
                host.start()
                ref = tmp / "remote.git" / "refs" / "heads" / "main"
                ids = list(report.created.values())
                latencies = []
                await runtime.users.ensure_service_user("bench", "bench", Metadata(actor="cli:bench"), admin=True)
                _, token = await runtime.tokens.create("bench", "bench", Metadata(actor="cli:bench"))
                app = create_app(runtime.settings, runtime=runtime)
                async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {token}"}) as client:
                    await asyncio.sleep(0.5)
                    for n in range(edits):
                        before = ref.read_text()
                        t0 = time.perf_counter()
                        resp = await client.patch(f"/api/v1/tables/{ids[n]}", json={"description": f"edit {n}"})
                        assert resp.status == 200, await resp.text()
                        while ref.read_text() == before:
                            await asyncio.sleep(0.005)
                        latencies.append(time.perf_counter() - t0)
                await host.stop()
                one = baseline_one_commit(tmp)
                p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
                print(f"  API edit -> pushed ({edits} edits, settle {sync.settle:.1f} s): p50 {p50 * 1000:.0f} ms, "
                      f"p95 {p95 * 1000:.0f} ms   baseline commit+push by hand p50 {one * 1000:.0f} ms   "
                      f"target p50 <= 2 s: {'ok' if p50 <= 2 else 'MISSED'}")
            finally:
                await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.tables, args.edits))

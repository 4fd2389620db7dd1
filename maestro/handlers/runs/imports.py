"""Import tables in runs: read the source into Parquet in Cloud Storage, load it, exactly once.

(Being built: issue 9.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maestro.events.runs import JobConfig
from maestro.handlers.runs.executor import Outcome

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner


@dataclass
class ImportContext:
    storage: Callable[[], Any]  # the google.cloud.storage Client in use now
    database: Callable[[str], Any]  # name -> (DatabaseSection, password) or None


async def run_import(
    runner: Runner, job_id: str, run_id: str | None, table_id: str, config: JobConfig, *,
    cancelled: Callable[[], bool],
) -> Outcome:
    return Outcome("failed", reason="not_implemented", message="imports are not built yet")

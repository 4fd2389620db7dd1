"""An external table in a run: wait for its upload to be loaded, up to its timeout.

(Being built: issue 9 item 8.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from maestro.events.runs import JobConfig
from maestro.handlers.runs.executor import Outcome

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner


async def wait_external(
    runner: Runner, job_id: str, run_id: str | None, table_id: str, config: JobConfig, *,
    planned_at: float | None, cancelled: Callable[[], bool],
) -> Outcome:
    return Outcome("failed", reason="not_implemented", message="external waits are not built yet")

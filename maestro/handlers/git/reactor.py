"""The git reactor: runs the git worker while this process leads, and wakes it on what matters.

It follows catalog events, signed webhook deliveries (``GitWebhookReceived``, appended by whichever
replica received the request) and changes of the git configuration. Handling an event only wakes
the worker (:class:`maestro.handlers.git.sync.GitSync`), which reads the log itself from the
position the repository's last Maestro commit names: that trailer, not the reactor's checkpoint,
is what makes each event committed exactly once — it survives a ``kill -9`` between a commit and
anything recorded in PostgreSQL, and a new leader with a fresh clone reads it from the remote.
"""

from __future__ import annotations

from maestro.events.config import ConfigChanged, ConfigSecretsCleared, ConfigSecretsRotated
from maestro.events.model import RecordedEvent
from maestro.handlers.git.render import CATALOG_EVENTS
from maestro.handlers.git.sync import GitSync
from maestro.handlers.notify.reactor import Reactor


class GitReactor(Reactor):
    name = "git"
    event_types = (*CATALOG_EVENTS, "GitWebhookReceived", "ConfigChanged", "ConfigSecretsRotated",
                   "ConfigSecretsCleared")
    start_at = "head"
    attempts = 1

    def __init__(self, worker: GitSync) -> None:
        self.worker = worker

    async def resume(self) -> None:
        self.worker.start()

    async def handle(self, event: RecordedEvent) -> None:
        e = event.event
        if isinstance(e, (ConfigChanged, ConfigSecretsRotated, ConfigSecretsCleared)) and e.section != "git":
            return
        self.worker.wake()

    async def stop(self) -> None:
        await self.worker.stop()

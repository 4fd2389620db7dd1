"""A delivery log kept in memory, for the Slack sender's tests (maestro.handlers.notify.slack_sender).

It implements our own ``DeliveryLog`` interface (the production one writes delivery events) so
the sender's queueing can be tested on its own against the Slack fake; it records every call in
order, the way the delivery events would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maestro.adapters.slack import Posted
from maestro.errors import SlackError
from maestro.handlers.notify.slack_sender import Outgoing


@dataclass
class MemoryDeliveries:
    records: list[tuple[str, str, Any]] = field(default_factory=list)  # (what, delivery id, detail)
    refs: dict[tuple[str, str], Posted] = field(default_factory=dict)
    down: int = 0  # the next `down` writes fail, as a database outage would

    def _write(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise ConnectionRefusedError("the database is down")

    async def planned(self, item: Outgoing) -> bool:
        self._write()
        if any(r[0] == "planned" and r[1] == item.delivery_id for r in self.records):
            return False
        self.records.append(("planned", item.delivery_id, item.channel))
        return True

    async def attempted(self, item: Outgoing, attempt: int, error: SlackError, retry_in: float) -> None:
        self._write()
        self.records.append(("attempted", item.delivery_id, (attempt, error.reason, retry_in)))

    async def succeeded(self, item: Outgoing, attempt: int, posted: Posted, edited: bool) -> None:
        self._write()
        self.records.append(("succeeded", item.delivery_id, (attempt, posted, edited)))
        self.refs[(item.notice.key, item.channel)] = posted

    async def failed(self, item: Outgoing, attempt: int, error: SlackError, exhausted: bool) -> None:
        self._write()
        self.records.append(("failed", item.delivery_id, (attempt, error.reason, exhausted)))

    async def message_ref(self, key: str, channel: str) -> Posted | None:
        return self.refs.get((key, channel))

    def of(self, what: str) -> list[tuple[str, str, Any]]:
        return [r for r in self.records if r[0] == what]

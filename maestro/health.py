"""What each long-lived part of this process is doing, for ``/healthz`` and ``/metrics``.

A loop that talks to PostgreSQL or BigQuery reports here: ``ok`` while it works, ``down`` (with
the error) while it cannot and is retrying, ``standby`` when it deliberately does nothing (a
replica that is not the runner's leader). ``/healthz`` answers 503 while any component is down,
naming it, so an operator or a load balancer sees a process that no longer executes jobs instead
of a green light over a dead loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from maestro.errors import MaestroError

State = Literal["ok", "down", "standby", "starting"]


@dataclass
class ComponentHealth:
    state: State
    detail: str
    since: float  # time.time() of the last change of state

    def to_dict(self) -> dict[str, object]:
        return {"state": self.state, "detail": self.detail, "since": round(self.since, 3)}


class Health:
    def __init__(self) -> None:
        self._components: dict[str, ComponentHealth] = {}

    def set(self, component: str, state: State, detail: str = "") -> None:
        current = self._components.get(component)
        if current is not None and current.state == state:
            current.detail = detail
            return
        self._components[component] = ComponentHealth(state, detail, time.time())

    def ok(self, component: str, detail: str = "") -> None:
        self.set(component, "ok", detail)

    def down(self, component: str, error: BaseException | str) -> None:
        """``/healthz`` is public: our own messages are shown, a driver's only by its class (the
        log has the rest)."""
        if isinstance(error, str):
            detail = error
        elif isinstance(error, MaestroError):
            detail = f"{type(error).__name__}: {error.message}"
        else:
            detail = f"{type(error).__name__} (see the server log)"
        self.set(component, "down", detail[:500])

    def forget(self, component: str) -> None:
        self._components.pop(component, None)

    def snapshot(self) -> dict[str, ComponentHealth]:
        return dict(self._components)

    def degraded(self) -> list[str]:
        return sorted(name for name, c in self._components.items() if c.state == "down")

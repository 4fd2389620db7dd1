"""Prometheus metrics of one Maestro process (one registry per application)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from maestro.events.model import category_of
from maestro.events.store import AppendResult


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_appended = Counter(
            "maestro_events_appended", "Events appended by this process", ["category"], registry=registry
        )
        self.projection_lag = Gauge(
            "maestro_projection_lag_events", "Events not yet applied", ["projection", "mode"], registry=registry
        )
        self.projection_position = Gauge(
            "maestro_projection_position", "Checkpoint position", ["projection"], registry=registry
        )
        self.log_head = Gauge("maestro_log_head_position", "Highest committed position", registry=registry)
        self.component_state = Gauge(
            "maestro_component_state", "1 for the state each component of this process is in",
            ["component", "state"], registry=registry,
        )

    def on_append(self, result: AppendResult) -> None:
        self.events_appended.labels(category_of(result.stream_id)).inc(len(result.events))

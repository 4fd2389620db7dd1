"""Every projection Maestro runs, in one list."""

from __future__ import annotations

from maestro.projections.base import Projection
from maestro.projections.streams import StreamsProjection


def all_projections() -> list[Projection]:
    return [StreamsProjection()]

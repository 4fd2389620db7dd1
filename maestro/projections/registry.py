"""Every projection Maestro runs, in one list."""

from __future__ import annotations

from maestro.projections.base import Projection
from maestro.projections.catalog import CatalogProjection
from maestro.projections.config import ConfigProjection
from maestro.projections.costs import CostsProjection
from maestro.projections.deliveries import DeliveriesProjection
from maestro.projections.git import GitProjection
from maestro.projections.runs import RunsProjection
from maestro.projections.sessions import SessionsProjection
from maestro.projections.streams import StreamsProjection
from maestro.projections.tokens import TokensProjection
from maestro.projections.users import UsersProjection


def all_projections() -> list[Projection]:
    return [
        CatalogProjection(),
        TokensProjection(),
        UsersProjection(),
        SessionsProjection(),
        ConfigProjection(),
        RunsProjection(),
        StreamsProjection(),
        CostsProjection(),
        DeliveriesProjection(),
        GitProjection(),
    ]

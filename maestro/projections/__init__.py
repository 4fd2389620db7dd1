"""Read models derived from the event log."""

from maestro.projections.base import Projection
from maestro.projections.runner import ProjectionRunner, ProjectionStatus

__all__ = ["Projection", "ProjectionRunner", "ProjectionStatus"]

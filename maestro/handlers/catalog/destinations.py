"""Where a table may write: the projects tables may target, and datasets owned by groups.

Any member could point a table at any project (billing or overwriting someone else's), and at a
dataset another group's tables fill. Two guards close that for non-administrators (the write rule,
``maestro.http.rules``, applies them; administrators and ``maestro apply`` on the database are
trusted):

- **Projects.** A table's ``project`` must be the configured one (``MAESTRO_PROJECT``, the
  ``bigquery`` section's ``project``, ``MAESTRO_GOOGLE_PROJECT``) or one listed in the ``bigquery``
  section's ``allowed_projects`` (live configuration: it applies to the next request). No project
  means the default one, always allowed.
- **Datasets.** An administrator may give a dataset to a group (``DatasetOwnerChanged``). A table
  may then write there only if it belongs to that group. A dataset without an owner belongs to the
  groups whose live tables it already holds (if any), so a group cannot move into a dataset
  another group uses. Datasets are keyed by name, as ``catalog_datasets`` is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from maestro.errors import DatasetOfAnotherGroup, Forbidden, ProjectNotAllowed, ValidationFailed
from maestro.events.catalog import DatasetOwnerChanged
from maestro.events.model import Metadata
from maestro.events.store import EventStore

ANY_VERSION = -2  # dataset streams take appends at any version, as registering does


@dataclass(frozen=True, slots=True)
class DatasetOwners:
    owner: str | None  # the group an administrator gave it to
    users: frozenset[str]  # groups whose live tables it holds (other than the one being written)

    @property
    def groups(self) -> frozenset[str]:
        """Who may write there: the owner, else the groups already using it (empty: anyone)."""
        return frozenset({self.owner}) if self.owner is not None else self.users


async def dataset_owners(pool: Any, dataset: str, *, except_table: str | None = None) -> DatasetOwners:
    owner = await pool.fetchval("SELECT owner_group FROM catalog_datasets WHERE dataset = $1", dataset)
    rows = await pool.fetch(
        "SELECT DISTINCT spec->>'group_id' AS g FROM catalog_tables WHERE dataset = $1 AND NOT deleted "
        "AND spec->>'group_id' IS NOT NULL AND table_id IS DISTINCT FROM $2",
        dataset, except_table,
    )
    return DatasetOwners(owner, frozenset(r["g"] for r in rows))


async def set_dataset_owner(
    store: EventStore, users: Any, dataset: str, group_id: str | None, actor: Metadata
) -> None:
    if group_id is not None and not await users.group_exists(group_id):
        raise ValidationFailed(f"group_id: no group {group_id!r}")
    event = DatasetOwnerChanged(dataset=dataset, group_id=group_id)
    await store.append(f"dataset-{dataset}", ANY_VERSION, [event], actor)


def allowed_projects(configured: Iterable[str | None], listed: Iterable[str]) -> frozenset[str]:
    """The projects tables may write to: the configured ones and the listed ones, lowercase.

    >>> sorted(allowed_projects(["Acme-Prod", None], ["acme-lab"]))
    ['acme-lab', 'acme-prod']
    """
    return frozenset(p.lower() for p in (*configured, *listed) if p)


async def destination_problem(
    pool: Any, allowed: frozenset[str], spec: Mapping[str, Any], table_id: str | None
) -> tuple[str, type[Forbidden]] | None:
    """Why a member may not save ``spec`` (the table as the write would leave it), or None."""
    project = spec.get("project")
    if isinstance(project, str) and project.lower() not in allowed:
        return (
            f"tables may not write to project {project!r} (allowed: {', '.join(sorted(allowed))}; "
            "an administrator lists more in the bigquery section's allowed_projects)",
            ProjectNotAllowed,
        )
    dataset, group = spec.get("dataset"), spec.get("group_id")
    if isinstance(dataset, str):
        owners = (await dataset_owners(pool, dataset, except_table=table_id)).groups
        if owners and group not in owners:
            return (
                f"dataset {dataset!r} belongs to group {', '.join(sorted(owners))}: "
                f"a table of group {group!r} may not write there",
                DatasetOfAnotherGroup,
            )
    return None

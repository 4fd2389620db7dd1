"""Inbound (mode ``sync``): what people commit on the branch is applied as ``maestro apply`` would.

The tree of the branch head is read and checked whole (YAML, specs, SQL with file line and
column, groups and frequencies that exist), planned against the catalog with ``--prune`` (the
repository mirrors the catalog, so a deleted file is a deleted table), and executed in one go: the
plan is refused entirely — no event but :class:`GitCommitRefused` — or carried out entirely.

**Conflicts: the log wins.** A commit is made on top of some Maestro commit, whose trailer says up
to which log position it shows the catalog (``covered``). A table whose events in the log come
after that position was changed by someone who did not see the commit, and the commit's author did
not see that change: such a table keeps what the log says (it is listed as ``kept``), and the next
Maestro commit writes the log's version over the file. Everything else the commit changed applies.
So an API edit is never silently undone by a commit prepared without it, and a commit's other
files are not lost because one file raced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from maestro.errors import ConcurrencyConflict, Conflict, MaestroError, ValidationFailed
from maestro.events.model import Metadata
from maestro.handlers.catalog import apply, folder
from maestro.handlers.catalog.apply import ApplyInterrupted
from maestro.handlers.catalog.history import TABLE_EVENTS
from maestro.handlers.catalog.service import CatalogService
from maestro.projections.catalog import apply_table_event

PAGE = 5000


class CommitRefused(ValidationFailed):
    """The branch head does not describe a valid catalog; nothing of it was applied."""

    code = "git_commit_refused"

    def __init__(self, message: str, problems: Sequence[dict[str, Any]] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message, problems=self.problems)


@dataclass
class Applied:
    plan: list[str]
    summary: str
    kept: list[str] = field(default_factory=list)


def _relative(problem: dict[str, Any], base: Path) -> dict[str, Any]:
    path = str(problem.get("path") or "")
    try:
        path = str(Path(path).relative_to(base))
    except ValueError:
        pass
    return {**problem, "path": path}


async def changed_since(catalog: CatalogService, covered: int) -> tuple[set[str], set[tuple[str, str]]]:
    """Tables with events after ``covered``, and every name they had (the log wins for them)."""
    ids: set[str] = set()
    position = covered
    while True:
        batch = await catalog.store.read_all(position, PAGE, TABLE_EVENTS)
        if not batch:
            break
        ids.update(r.stream_id.removeprefix("table-") for r in batch)
        position = batch[-1].position
    names: set[tuple[str, str]] = set()
    for table_id in ids:
        spec: dict[str, Any] = {}
        for r in await catalog.store.read(f"table-{table_id}"):
            spec = apply_table_event(spec, r.event)
            if spec:
                names.add((spec["dataset"], spec["name"]))
    return ids, names


async def _references(catalog: CatalogService, plan: apply.Plan, root: Path, base: Path) -> list[dict[str, Any]]:
    """Problems with what the specs point at: groups and frequencies that do not exist."""
    groups = {r[0] for r in await catalog.pool.fetch("SELECT group_id FROM groups")}
    frequencies = {r[0] for r in await catalog.pool.fetch("SELECT frequency_id FROM catalog_frequencies")}
    problems = []
    for change in plan.creates + plan.updates:
        spec = change.spec
        assert spec is not None
        path = str((root / spec.dataset / f"{spec.name}.sql").relative_to(base))
        if spec.group_id is not None and spec.group_id not in groups:
            problems.append({"path": path, "line": None, "column": None,
                             "message": f"group_id: no group {spec.group_id!r}"})
        if spec.frequency_id is not None and spec.frequency_id not in frequencies:
            problems.append({"path": path, "line": None, "column": None,
                             "message": f"frequency_id: no frequency {spec.frequency_id!r}"})
    return problems


async def apply_tree(catalog: CatalogService, root: Path, base: Path, covered: int, meta: Metadata) -> Applied:
    """Apply the catalog under ``root`` (the clone at ``base``). Raises CommitRefused (nothing
    applied), or ApplyInterrupted/ConcurrencyConflict when a concurrent writer got in the way
    (retry later)."""
    if not (root / folder.EXPORT_MARKER).is_file():
        where = str(root.relative_to(base)) if root != base else "the repository's root"
        raise CommitRefused(f"no catalog in {where}: the {folder.EXPORT_MARKER} file Maestro writes is missing")
    try:
        specs = folder.read_folder(root, default_project=catalog.default_project)
    except folder.FolderInvalid as exc:
        problems = [_relative(p, base) for p in exc.details.get("problems", [])]
        raise CommitRefused(f"{len(problems)} problem(s) in the commit; nothing was applied", problems) from None
    await catalog.refresh()
    rows = await apply.load_rows(catalog)
    try:
        plan = apply.plan(specs, rows, prune=True)
    except ValidationFailed as exc:
        raise CommitRefused(exc.message) from None
    ids, names = await changed_since(catalog, covered)
    kept = sorted(
        [c.label for c in plan.updates + plan.deletes if c.table_id in ids]
        + [c.label for c in plan.creates if (c.dataset, c.name) in names]
    )
    plan = replace(
        plan,
        creates=tuple(c for c in plan.creates if (c.dataset, c.name) not in names),
        updates=tuple(c for c in plan.updates if c.table_id not in ids),
        deletes=tuple(c for c in plan.deletes if c.table_id not in ids),
    )
    if problems := await _references(catalog, plan, root, base):
        raise CommitRefused(f"{len(problems)} problem(s) in the commit; nothing was applied", problems)
    try:
        report = await apply.execute(plan, catalog, meta)
    except (ApplyInterrupted, ConcurrencyConflict):
        raise
    except Conflict as exc:
        if exc.code == "conflict" and "plan again" in exc.message:
            raise ApplyInterrupted(exc.message) from exc  # the catalog moved meanwhile: retry
        raise CommitRefused(exc.message, _detail_problems(exc)) from None
    except MaestroError as exc:
        if exc.status >= 500:
            raise
        raise CommitRefused(exc.message, _detail_problems(exc)) from None
    return Applied([c.describe() for c in plan.changes], report.summary(), kept)


def _detail_problems(exc: MaestroError) -> list[dict[str, Any]]:
    problems = exc.details.get("problems")
    if isinstance(problems, list):
        return [p if isinstance(p, dict) else {"message": str(p)} for p in problems]
    return [{"path": None, "line": None, "column": None, "message": exc.message}]

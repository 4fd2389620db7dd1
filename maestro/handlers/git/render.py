"""From catalog events to files and commit messages (pure, except writing into a folder).

The repository holds the catalog in the layout ``maestro export`` writes and ``maestro apply``
reads (maestro.handlers.catalog.folder): ``<dataset>/<name>.sql`` with its YAML header, or a
``<name>.yaml`` sidecar for import and external tables, plus the export's marker file. Two files
at the top, which ``apply`` ignores, mirror what the folder layout has no place for:
``frequencies.yaml`` (id -> cadence, the ids tables name in ``frequency_id``) and ``datasets.yaml``
(registered datasets and their owning groups). Nothing volatile — run state, timestamps, versions —
is in any file, so a file changes only when its table does.

**One commit per change.** The events of one command share a correlation id (an API request's,
or one ``maestro apply``'s for all its tables), so consecutive events with the same correlation id
are one commit, whose message is the plan as ``maestro apply`` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from maestro.events.catalog import (
    DatasetOwnerChanged,
    DatasetRegistered,
    FrequencyChanged,
    FrequencyCreated,
    TableSpec,
)
from maestro.events.model import RecordedEvent
from maestro.handlers.catalog import folder
from maestro.handlers.catalog.history import TABLE_EVENTS

FREQUENCIES_FILE = "frequencies.yaml"
DATASETS_FILE = "datasets.yaml"
CATALOG_EVENTS = (*TABLE_EVENTS, "FrequencyCreated", "FrequencyChanged", "DatasetRegistered", "DatasetOwnerChanged")
# A commit holds at most this many events: a bulk apply of 100,000 tables is several commits
# rather than one that git, and reviewers, choke on.
MAX_GROUP = 20_000
_HEADS = ("+ create", "~ update", "- delete", "+ restore", "~ rename")


def group(events: Sequence[RecordedEvent], max_events: int = MAX_GROUP) -> list[list[RecordedEvent]]:
    """Consecutive events with the same correlation id, in position order: one commit each."""
    groups: list[list[RecordedEvent]] = []
    for event in events:
        if groups and len(groups[-1]) < max_events and (
            groups[-1][-1].metadata.correlation_id == event.metadata.correlation_id
        ):
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


@dataclass(frozen=True, slots=True)
class TableChange:
    """One table across one commit: its live spec before and after (None: absent or deleted)."""

    table_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    was_deleted: bool = False  # before is None because the table was deleted (not new)

    @property
    def label(self) -> str:
        spec = self.after or self.before or {}
        return f"{spec.get('dataset')}.{spec.get('name')}"

    def fields(self) -> list[str]:
        if self.before is None or self.after is None:
            return []
        keys = dict.fromkeys([*self.after, *self.before])
        return [k for k in keys if self.before.get(k) != self.after.get(k)]

    def describe(self) -> str | None:
        """The plan line, as ``maestro apply`` prints it; None when nothing visible changed."""
        if self.before is None and self.after is None:
            return None
        if self.before is None:
            return f"+ {'restore' if self.was_deleted else 'create'} {self.label}"
        if self.after is None:
            return f"- delete {self.label}"
        fields = self.fields()
        if not fields:
            return None
        old = f"{self.before['dataset']}.{self.before['name']}"
        if old != self.label:
            rest = [f for f in fields if f not in ("dataset", "name")]
            return f"~ rename {old} -> {self.label}" + (f" ({', '.join(rest)})" if rest else "")
        return f"~ update {self.label} ({', '.join(fields)})"


def _spec(payload: Mapping[str, Any]) -> TableSpec:
    return TableSpec.model_validate(dict(payload))


def table_paths(root: Path, payload: Mapping[str, Any]) -> list[Path]:
    """Every file a table may have (its .sql and its sidecar), whichever it has now."""
    base = root / str(payload["dataset"])
    return [base / f"{payload['name']}.sql", base / f"{payload['name']}.yaml"]


def write_table(root: Path, change: TableChange) -> None:
    """Make ``root`` hold ``change.after`` for this table: old files gone, new ones written."""
    for spec in (change.before, change.after):
        if spec is not None:
            for path in table_paths(root, spec):
                path.unlink(missing_ok=True)
    if change.after is not None:
        spec = _spec(change.after)
        for name, content in folder.render(spec).items():
            path = root / spec.dataset / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8", newline="\n")
    if change.before is not None:
        old = root / str(change.before["dataset"])
        if old.is_dir() and not any(old.iterdir()):
            old.rmdir()


# ---------------------------------------------------------------------- frequencies, datasets
def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _dump(path: Path, data: Mapping[str, Any]) -> None:
    if not data:
        path.unlink(missing_ok=True)
        return
    text = yaml.safe_dump(dict(sorted(data.items())), sort_keys=False, allow_unicode=True, width=100)
    path.write_text(text, encoding="utf-8", newline="\n")


def fold_side(frequencies: dict[str, Any], datasets: dict[str, Any], event: object) -> str | None:
    """Fold a frequency or dataset event into the two mappings; its plan line."""
    if isinstance(event, FrequencyCreated):
        frequencies[event.frequency_id] = event.spec.model_dump(mode="json")
        return f"+ create frequency {event.spec.name}"
    if isinstance(event, FrequencyChanged):
        spec = {**frequencies.get(event.frequency_id, {}), **event.changes}
        frequencies[event.frequency_id] = spec
        return f"~ update frequency {spec.get('name', event.frequency_id)} ({', '.join(event.changes)})"
    if isinstance(event, DatasetRegistered):
        entry = {**datasets.get(event.dataset, {}), "project": event.project, "description": event.description}
        datasets[event.dataset] = entry
        return f"+ register dataset {event.dataset}"
    if isinstance(event, DatasetOwnerChanged):
        datasets[event.dataset] = {**datasets.get(event.dataset, {}), "owner_group": event.group_id}
        return f"~ dataset {event.dataset} owned by {event.group_id or 'no group'}"
    return None


def write_side_files(root: Path, events: Iterable[RecordedEvent]) -> list[str]:
    """Apply frequency and dataset events to the two top files; their plan lines."""
    frequencies, datasets = _load(root / FREQUENCIES_FILE), _load(root / DATASETS_FILE)
    lines = [line for r in events if (line := fold_side(frequencies, datasets, r.event)) is not None]
    if lines:
        root.mkdir(parents=True, exist_ok=True)
        _dump(root / FREQUENCIES_FILE, frequencies)
        _dump(root / DATASETS_FILE, datasets)
    return lines


def write_snapshot(root: Path, specs: Iterable[Mapping[str, Any]], frequencies: Mapping[str, Any],
                   datasets: Mapping[str, Any]) -> None:
    """The whole catalog into ``root``, exactly as ``maestro export`` writes it (table files of
    other tables removed, other files kept), plus the two top files."""
    root.mkdir(parents=True, exist_ok=True)
    # The clone is Maestro's own: it is an export's folder, whatever was committed there before.
    (root / folder.EXPORT_MARKER).touch()
    folder.export([_spec(s) for s in specs], root)
    _dump(root / FREQUENCIES_FILE, frequencies)
    _dump(root / DATASETS_FILE, datasets)


# ---------------------------------------------------------------------- messages
_RANK = {"+ create": 0, "+ restore": 0, "~ update": 1, "~ rename": 1, "- delete": 2}


def plan_order(lines: Iterable[str]) -> list[str]:
    """Plan lines in the order ``maestro apply`` prints them: creates, updates, deletes, each by
    table name (an apply appends its tables concurrently, so the log's order is arbitrary)."""
    def key(line: str) -> tuple[int, str]:
        head = " ".join(line.split(" ", 2)[:2])
        return _RANK.get(head, 3), line.split(" ", 2)[-1]

    return sorted(lines, key=key)


def title_of(lines: Sequence[str]) -> str:
    """One line naming the change: the plan line itself, or counts for a bigger plan."""
    if len(lines) == 1:
        line = lines[0]
        verb, _, rest = line[2:].partition(" ")
        return f"{verb.capitalize()} {rest}"
    counts = {head: sum(1 for line in lines if line.startswith(head)) for head in _HEADS}
    words = ("created", "updated", "deleted", "restored", "renamed")
    parts = [f"{n} {word}" for (head, n), word in zip(counts.items(), words) if n or word in words[:3]]
    others = len(lines) - sum(counts.values())
    if others:
        parts.append(f"{others} other change{'s' if others != 1 else ''}")
    return f"Apply: {', '.join(parts)}"


def message(lines: Sequence[str], first: int, last: int, actor: str, correlation: str,
            title: str | None = None, path: str = ".") -> str:
    """The commit message: a title, the plan, and the trailers that identify the events (and the
    folder of the repository whose catalog they are in)."""
    body = "\n".join(lines)
    trailers = (f"Maestro-Events: {first}-{last}\nMaestro-Path: {path}\nMaestro-Actor: {actor}\n"
                f"Maestro-Correlation: {correlation}")
    return f"{title or title_of(lines)}\n\n{body}\n\n{trailers}\n" if body else f"{title}\n\n{trailers}\n"

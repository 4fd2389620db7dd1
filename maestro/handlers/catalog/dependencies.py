"""The catalog's dependency state: which table reads which, as a graph kept in memory.

Every live table has the set of :class:`TableRef` its SQL reads. A reference resolves to a catalog
table when the name matches (wildcards match every table they cover); otherwise it is an
external source, kept and shown. Creating, renaming or deleting a table can therefore change the
parents of *other* tables (those that read its old or new name), so a change is planned on a copy
— every affected table's parents recomputed, every new edge cycle-checked — and swapped in only
after its event has been appended.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from maestro.catalog.graph import DependencyGraph
from maestro.catalog.sql import TableRef
from maestro.errors import CycleDetected


@dataclass(frozen=True, slots=True)
class Entry:
    """What dependency resolution needs to know of one live table."""

    table_id: str
    project: str | None
    dataset: str
    name: str
    refs: frozenset[TableRef]

    @property
    def label(self) -> str:
        return f"{self.dataset}.{self.name}"


@dataclass
class DependencyState:
    default_project: str | None
    entries: dict[str, Entry] = field(default_factory=dict)
    graph: DependencyGraph = field(default_factory=DependencyGraph)
    by_name: dict[tuple[str, str], str] = field(default_factory=dict)
    # Who reads a name: exact references by (dataset, name); wildcards are scanned.
    readers: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    wildcard_readers: dict[str, set[TableRef]] = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def project_of(self, entry: Entry) -> str | None:
        return (entry.project or self.default_project or "").lower() or None

    def resolve(self, entry: Entry) -> tuple[set[str], list[str]]:
        """(parent table ids, external references) of ``entry`` against the live catalog."""
        parents: set[str] = set()
        external: list[str] = []
        for ref in entry.refs:
            if ref.is_wildcard:
                matched = {
                    tid
                    for (dataset, name), tid in self.by_name.items()
                    if tid != entry.table_id
                    and ref.matches(self.project_of(self.entries[tid]), dataset, name)
                }
                if matched:
                    parents |= matched
                else:
                    external.append(str(ref))
                continue
            tid = self.by_name.get((ref.dataset, ref.name))
            if (
                tid is not None
                and tid != entry.table_id
                and ref.matches(self.project_of(self.entries[tid]), ref.dataset, ref.name)
            ):
                parents.add(tid)
            elif tid != entry.table_id:
                external.append(str(ref))
        return parents, sorted(external)

    def readers_of(self, dataset: str, name: str) -> set[str]:
        found = set(self.readers.get((dataset, name), ()))
        for tid, refs in self.wildcard_readers.items():
            if any(ref.dataset == dataset and name.startswith(ref.name[:-1]) for ref in refs):
                found.add(tid)
        return found

    def label(self, table_id: str) -> str:
        entry = self.entries.get(table_id)
        return entry.label if entry else table_id

    # ------------------------------------------------------------------ changes
    def planned(self, table_id: str, new: Entry | None) -> DependencyState:
        """The state after ``table_id`` becomes ``new`` (None: deleted). Raises CycleDetected."""
        old = self.entries.get(table_id)
        state = self._copy()
        if old is not None:
            state._remove(old)
        if new is not None:
            state._add(new)
        affected = {table_id} if new is not None else set()
        renamed = old is None or new is None or (old.project, old.dataset, old.name) != (
            new.project, new.dataset, new.name
        )
        # Readers resolve by name: only a create, delete or rename can change their parents.
        for entry in (old, new) if renamed else ():
            if entry is not None:
                affected |= state.readers_of(entry.dataset, entry.name)
        affected &= state.entries.keys()
        graph = state.graph
        if new is None:
            graph.remove_node(table_id)
        # The changed table last: a cycle it closes is then reported starting from it.
        for tid in [*sorted(affected - {table_id}), *sorted(affected & {table_id})]:
            parents, _ = state.resolve(state.entries[tid])
            try:
                graph.set_parents(tid, parents)
            except CycleDetected as exc:
                raise CycleDetected([state.label(t) for t in exc.path]) from None
        return state

    def _copy(self) -> DependencyState:
        readers: dict[tuple[str, str], set[str]] = defaultdict(set)
        for key, ids in self.readers.items():
            readers[key] = set(ids)
        return DependencyState(
            default_project=self.default_project,
            entries=dict(self.entries),
            graph=self.graph.copy(),
            by_name=dict(self.by_name),
            readers=readers,
            wildcard_readers=dict(self.wildcard_readers),
        )

    def _add(self, entry: Entry) -> None:
        self.entries[entry.table_id] = entry
        self.by_name[(entry.dataset, entry.name)] = entry.table_id
        self.graph.add_node(entry.table_id)
        wildcards = set()
        for ref in entry.refs:
            if ref.is_wildcard:
                wildcards.add(ref)
            else:
                self.readers[(ref.dataset, ref.name)].add(entry.table_id)
        if wildcards:
            self.wildcard_readers[entry.table_id] = wildcards

    def _remove(self, entry: Entry) -> None:
        self.entries.pop(entry.table_id, None)
        if self.by_name.get((entry.dataset, entry.name)) == entry.table_id:
            del self.by_name[(entry.dataset, entry.name)]
        for ref in entry.refs:
            if not ref.is_wildcard:
                self.readers[(ref.dataset, ref.name)].discard(entry.table_id)
        self.wildcard_readers.pop(entry.table_id, None)

    @classmethod
    def build(cls, entries: Iterable[Entry], default_project: str | None) -> DependencyState:
        """The state of a whole catalog at once (start-up, refresh). Raises CycleDetected."""
        state = cls(default_project=default_project)
        entries = list(entries)
        for entry in entries:
            state._add(entry)
        edges = []
        for entry in entries:
            parents, _ = state.resolve(entry)
            edges.extend((p, entry.table_id) for p in parents)
        state.graph = DependencyGraph.from_edges([e.table_id for e in entries], edges)
        return state

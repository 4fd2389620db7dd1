"""The catalog's dependency state: which table reads which, as a graph kept in memory.

Every live table has the set of :class:`TableRef` its SQL reads. A reference resolves to a catalog
table when the name matches (wildcards match every table they cover); otherwise it is an
external source, kept and shown. Creating, renaming or deleting a table can therefore change the
parents of *other* tables (those that read its old or new name), so a change is planned on a copy
— every affected table's parents recomputed, every new edge cycle-checked — and swapped in only
after its event has been appended.

Two settings of a table adjust what its SQL says. ``depends_on`` names tables it depends on
without reading them in the SQL (edges of kind ``depends_on``, ordering runs like inferred
ones). ``not_dependencies`` names references of its SQL that must not order runs — a table that
reads the *previous* state of a table that reads it (incremental state split over two tables) —
so that pair is not a cycle; such a reference is still shown, as ``not_dependency``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from maestro.catalog.graph import DependencyGraph
from maestro.catalog.sql import TableRef
from maestro.errors import CycleDetected, InvalidDependency


@dataclass(frozen=True, slots=True)
class Entry:
    """What dependency resolution needs to know of one live table."""

    table_id: str
    project: str | None
    dataset: str
    name: str
    refs: frozenset[TableRef]  # what the SQL reads
    depends_on: frozenset[TableRef] = frozenset()
    not_dependencies: frozenset[TableRef] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.dataset}.{self.name}"

    @property
    def named(self) -> frozenset[TableRef]:
        """Every name whose table (appearing, vanishing) can change this entry's parents."""
        return self.refs | self.depends_on


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one table's references resolve to against the live catalog (table ids)."""

    parents: frozenset[str] = frozenset()  # the edges that order runs
    declared: frozenset[str] = frozenset()  # parents only ``depends_on`` gives (the SQL reads none)
    ignored: frozenset[str] = frozenset()  # tables the SQL reads that ``not_dependencies`` exclude
    external: tuple[str, ...] = ()  # SQL references that name no catalog table
    missing: tuple[str, ...] = ()  # ``depends_on`` entries that name no live table

    def kind(self, parent: str) -> str:
        return "depends_on" if parent in self.declared else "inferred"


@dataclass
class DependencyState:
    default_project: str | None
    entries: dict[str, Entry] = field(default_factory=dict)
    graph: DependencyGraph = field(default_factory=DependencyGraph)
    by_name: dict[tuple[str, str], str] = field(default_factory=dict)
    # Who reads a name: exact references by (dataset, name); wildcards are scanned.
    readers: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    wildcard_readers: dict[str, set[TableRef]] = field(default_factory=dict)
    # Each live table's resolution, as its graph edges were last set from it (kinds of edges,
    # ignored references): recomputed exactly when its parents are.
    resolutions: dict[str, Resolution] = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def project_of(self, entry: Entry) -> str | None:
        return (entry.project or self.default_project or "").lower() or None

    def resolve(self, entry: Entry) -> Resolution:
        """What ``entry``'s SQL references, ``depends_on`` and ``not_dependencies`` resolve to."""
        read: set[str] = set()
        external: list[str] = []
        for ref in entry.refs:
            matched = self._tables(ref, entry.table_id)
            read |= matched
            if not matched and not self._is_itself(ref, entry):
                external.append(str(ref))
        ignored = {tid for tid in read if any(self._is(tid, ref) for ref in entry.not_dependencies)}
        declared: set[str] = set()
        missing: list[str] = []
        for ref in entry.depends_on:
            matched = self._tables(ref, entry.table_id)
            declared |= matched
            if not matched:
                missing.append(str(ref))
        inferred = read - ignored
        return Resolution(
            parents=frozenset(inferred | declared),
            declared=frozenset(declared - inferred),
            ignored=frozenset(ignored),
            external=tuple(sorted(external)),
            missing=tuple(sorted(missing)),
        )

    def resolution(self, table_id: str) -> Resolution:
        """The table's resolution as the graph holds it (empty for an unknown table)."""
        found = self.resolutions.get(table_id)
        if found is None and table_id in self.entries:
            found = self.resolutions[table_id] = self.resolve(self.entries[table_id])
        return found or Resolution()

    def _tables(self, ref: TableRef, reader: str) -> set[str]:
        """The live tables ``ref`` names (a wildcard: every one it covers), ``reader`` excluded."""
        if ref.is_wildcard:
            return {
                tid
                for (dataset, name), tid in self.by_name.items()
                if tid != reader and ref.matches(self.project_of(self.entries[tid]), dataset, name)
            }
        tid = self.by_name.get((ref.dataset, ref.name))
        return {tid} if tid is not None and tid != reader and self._is(tid, ref) else set()

    def _is(self, table_id: str, ref: TableRef) -> bool:
        entry = self.entries[table_id]
        return ref.matches(self.project_of(entry), entry.dataset, entry.name)

    def _is_itself(self, ref: TableRef, entry: Entry) -> bool:
        return not ref.is_wildcard and self.by_name.get((ref.dataset, ref.name)) == entry.table_id

    def check_declared(self, table_id: str) -> None:
        """Raise InvalidDependency when the table's ``depends_on`` names a table not in the catalog."""
        entry = self.entries[table_id]
        missing = self.resolution(table_id).missing
        itself = [str(ref) for ref in entry.depends_on if self._is_itself(ref, entry)]
        if itself:
            raise InvalidDependency(
                f"{entry.label}: depends_on names the table itself ({', '.join(itself)})",
                table=entry.label, field="depends_on", names=itself,
            )
        if missing:
            raise InvalidDependency(
                f"{entry.label}: depends_on names no table of the catalog: {', '.join(missing)}",
                table=entry.label, field="depends_on", names=list(missing),
            )

    def cycle_error(self, ids: list[str], cycles: list[list[str]] | None = None) -> CycleDetected:
        """``CycleDetected`` by table labels, advising how to break each cycle.

        A cycle ``a -> … -> z -> a`` closes with ``a`` reading ``z``: if that edge is the SQL's,
        ``not_dependencies: [z]`` on ``a`` breaks it (the way out for incremental state kept in
        two tables); if ``depends_on`` made it, that entry goes.
        """
        cycles = cycles or [ids]
        advice = []
        for cycle in cycles:
            reader, read = cycle[0], cycle[-2]
            entry = self.entries.get(reader)
            if entry is None or read not in self.entries:
                continue
            if read in self.resolution(reader).declared:
                advice.append(f"{entry.label} lists {self.label(read)} in depends_on: remove it there")
            else:
                advice.append(
                    f"if {entry.label} reads the previous state of {self.label(read)} on purpose, "
                    f"add {self.label(read)} to the not_dependencies of {entry.label}"
                )
        labelled = [[self.label(t) for t in cycle] for cycle in cycles]
        return CycleDetected(labelled[0], cycles=labelled, advice=advice)

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
            found = state.resolutions[tid] = state.resolve(state.entries[tid])
            try:
                graph.set_parents(tid, found.parents)
            except CycleDetected as exc:
                raise state.cycle_error(exc.path) from None
        if new is not None:
            state.check_declared(table_id)
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
            resolutions=dict(self.resolutions),
        )

    def _add(self, entry: Entry) -> None:
        self.entries[entry.table_id] = entry
        self.by_name[(entry.dataset, entry.name)] = entry.table_id
        self.graph.add_node(entry.table_id)
        wildcards = set()
        for ref in entry.named:
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
        for ref in entry.named:
            if not ref.is_wildcard:
                self.readers[(ref.dataset, ref.name)].discard(entry.table_id)
        self.wildcard_readers.pop(entry.table_id, None)
        self.resolutions.pop(entry.table_id, None)

    @classmethod
    def build(cls, entries: Iterable[Entry], default_project: str | None) -> DependencyState:
        """The state of a whole catalog at once (start-up, refresh, apply).

        Raises CycleDetected naming *every* cycle (by table labels, each starting at its
        smallest label, so the message is the same on every run).
        """
        state = cls(default_project=default_project)
        entries = list(entries)
        for entry in entries:
            state._add(entry)
        edges = []
        for entry in entries:
            found = state.resolutions[entry.table_id] = state.resolve(entry)
            edges.extend((p, entry.table_id) for p in found.parents)
        try:
            state.graph = DependencyGraph.from_edges([e.table_id for e in entries], edges)
        except CycleDetected:
            by_label = DependencyGraph.unchecked(
                [state.label(p) for p in state.entries], [(state.label(p), state.label(c)) for p, c in edges]
            )
            cycles = by_label.cycles()
            ids = {entry.label: entry.table_id for entry in entries}
            raise state.cycle_error([], [[ids[label] for label in cycle] for cycle in cycles]) from None
        return state

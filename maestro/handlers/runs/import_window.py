"""What one import reads, and the watermark its load records (maestro.handlers.runs.imports).

PostgreSQL: the rows above the watermark and the late commits below it that the previous
snapshot did not see, the floor, the snapshots still open. MySQL: the settled upper bound, the
boundary rows' fingerprints and their de-duplication; bounds typed as their column. The rules
are in docs/imports.md, "Incremental imports".
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from maestro.adapters.sources import mysql as mysql_source
from maestro.adapters.sources.columns import Column, SourceSchema
from maestro.catalog.import_query import ImportQuery, Incremental
from maestro.errors import SourceColumnError
from maestro.events.runs import ImportSpec, LoadField, Watermark

MAX_OPEN_SNAPSHOTS = 1000  # PostgreSQL: earlier snapshots kept while their transactions may run
# PostgreSQL: an import loads rows of transactions below its snapshot's xmin + XID_SPAN (and
# lists the ones from xmin on); once that list reaches SEEN_LIMIT, the span stops growing until
# the oldest transaction in flight ends (docs/imports.md, "Incremental imports").
XID_SPAN = 1_000_000
SEEN_LIMIT = 20_000


class ImportFailed(Exception):
    """An import that cannot go on, with its reason (a failed job, not a crash)."""

    def __init__(self, reason: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.retryable = reason, message, retryable


@dataclass(frozen=True)
class Previous:
    loaded: bool
    watermark: Watermark | None
    request: str | None


def source_column(schema: SourceSchema, name: str) -> Column:
    for c in schema.columns:
        if c.source.lower() == name.lower() or c.name.lower() == name.lower():
            return c
    raise SourceColumnError(
        f"the incremental column {name!r} is not among the columns the import query selects", column=name
    )


def max_query(query: ImportQuery, column: Column, dialect: str) -> tuple[Any, ...]:
    """The column's greatest value, as text, over the query's rows (its WHERE applies)."""
    quoted = query.quote(column.source)
    expr = f"max({quoted})::text" if dialect == "postgres" else f"CAST(max({quoted}) AS CHAR)"
    rendered = query.render(None, select=[expr])
    return (rendered.sql, *rendered.params) if dialect == "postgres" else (rendered.sql, rendered.params)


def _snapshot_bounds(snapshot: str) -> tuple[int, int]:
    xmin, xmax, _ = snapshot.split(":")
    return int(xmin), int(xmax)


def fingerprint(row: dict[str, Any], names: list[str]) -> str:
    """A row's identity for de-duplicating the MySQL boundary: its values of ``names`` (the columns
    loaded when the fingerprint was taken, so an added column does not change it)."""
    return hashlib.sha256(orjson.dumps([row.get(n) for n in names], default=_plain)).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if isinstance(value, (decimal.Decimal, dt.date, dt.time, dt.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


class Window:
    """What one import reads and the watermark its load will record."""

    def __init__(self, spec: ImportSpec, query: ImportQuery, schema: SourceSchema, dialect: str,
                 previous: Previous, full: bool) -> None:
        self.spec, self.query, self.schema, self.dialect = spec, query, schema, dialect
        self.previous, self.full = previous, full
        self.incremental: Incremental | None = None
        self.snapshot: str | None = None
        self.upper: Any = None
        self.column: Column | None = None
        self.boundary_rows: list[str] = []  # MySQL: fingerprints of the rows read at ``upper``
        self._boundary_value: pa.Scalar | None = None
        self._drop: Counter[str] = Counter()
        self._old_value: pa.Scalar | None = None
        self.nothing = False  # MySQL: the column had no value when looked at; read no row
        self._drop_fields: list[str] = []  # the columns the old boundary's fingerprints cover
        # PostgreSQL: this snapshot's xmin and xmax, the cut, the loaded transactions from xmin on
        self._seen_from = self._horizon = self._cut = 0
        self._seen: set[int] = set()

    @classmethod
    async def plan(cls, spec: ImportSpec, query: ImportQuery, schema: SourceSchema, source: Any,
                   dialect: str, previous: Previous, full: bool, upper: Any) -> Window:
        w = cls(spec, query, schema, dialect, previous, full)
        if not spec.id_column:
            return w
        w.column = column = source_column(schema, spec.id_column)
        wm = None if full else previous.watermark
        if dialect == "postgres":
            kind = await source.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)",
                                         query.quoted_table)
            if kind not in ("r", "p"):
                what = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}.get(kind or "", "not a table")
                raise ImportFailed("source_not_a_table", (
                    f"{query.quoted_table} is {what}: an incremental import from PostgreSQL reads a table "
                    "(it asks each row's inserting transaction, which only a table's rows carry); import "
                    "the table itself, or import this one in full (no id_column)"))
            w.snapshot = await source.fetchval("SELECT pg_current_snapshot()::text")
            w._pg_window(column, wm)
            return w
        if upper is None:
            if not full:  # nothing there when the importer looked: nothing settles this time
                w._read_nothing(column, wm)
            return w  # a full import with no value yet: every row, and the next import full too
        if wm is not None and wm.value is not None:
            w._old_value = _scalar(column, wm.value)
            if pc.less(_scalar(column, upper), w._old_value).as_py():
                w._read_nothing(column, wm)  # rows at the watermark went away: it stays where it is
                return w
        w.upper = upper
        w.incremental = Incremental(
            column.source, after=_bound(column, wm.value) if wm is not None else None, inclusive=True,
            up_to=_bound(column, upper), or_null=full,
        )
        w._boundary_value = _scalar(column, upper)
        if wm is not None and wm.value is not None and wm.boundary:
            w._drop = Counter(wm.boundary)
            w._drop_fields = [f.name for f in wm.fields]
        return w

    def _pg_window(self, column: Column, wm: Watermark | None) -> None:
        """PostgreSQL: read what the previous import did not load, below this import's cut.

        A transaction's rows become visible all at once, so "loaded" is a property of the
        inserting transaction: everything below the previous snapshot's xmin, and the ones
        listed in its ``seen``. The snapshot's own xip list is not enough: it omits
        subtransactions (a savepoint's rows carry the subtransaction's id) and is empty on a
        standby, so a row of a transaction in flight would look committed and be skipped.
        """
        xmin_now, xmax_now = _snapshot_bounds(self.snapshot or "0:0:")
        cut = min(xmax_now, xmin_now + XID_SPAN)
        if wm is not None and wm.cut is not None and len(wm.seen or ()) >= SEEN_LIMIT:
            cut = min(cut, max(wm.cut, xmin_now))  # the record is long: it spans no further
        self._seen_from, self._cut, self._horizon = xmin_now, cut, xmax_now
        xid_cut = cut if cut < xmax_now else None
        if wm is not None:
            loaded_from, _ = _snapshot_bounds(wm.snapshot or "0:0:")
            loaded = tuple(loaded_from + offset for offset in wm.seen or ())
            self._seen = {x for x in loaded if x >= xmin_now}
            self.incremental = Incremental(
                column.source, after=wm.value, column_type=column.source_type, floor=wm.floor,
                loaded_from=loaded_from, loaded_xids=loaded, xid_horizon=xmax_now, xid_cut=xid_cut,
            )
        elif xid_cut is not None:
            self.incremental = Incremental(column.source, column_type=column.source_type,
                                           xid_horizon=xmax_now, xid_cut=xid_cut)

    def read_options(self) -> dict[str, Any]:
        """What the source's ``read`` needs besides the window: PostgreSQL's inserting
        transaction of each row, for incremental imports."""
        return {"xmin": True} if self.dialect == "postgres" and self.column is not None else {}

    def _read_nothing(self, column: Column, wm: Watermark | None) -> None:
        """An empty window (``col > v AND col <= v``): the source is asked for no row."""
        self.nothing = True
        if wm is not None and wm.value is not None:
            value = _bound(column, wm.value)
            self.incremental = Incremental(column.source, after=value, up_to=value)

    def describe(self) -> dict[str, Any]:
        inc = self.incremental
        out: dict[str, Any] = {"column": self.spec.id_column}
        if inc is not None:
            out.update(after=inc.after, inclusive=inc.inclusive, up_to=inc.up_to, floor=inc.floor)
            if inc.loaded_from is not None:
                out.update(loaded_from=inc.loaded_from, loaded_transactions=len(inc.loaded_xids))
        if self.snapshot:
            out.update(snapshot=self.snapshot, cut=self._cut)
        return out

    async def filter(self, batches: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
        """MySQL: drop the rows at the old watermark loaded before; note the rows at the new one.
        PostgreSQL: note the rows' transactions (and drop the column that carries them)."""
        if self.dialect == "postgres" and self.column is not None:
            async for batch in batches:
                self._note_transactions(batch.column(batch.num_columns - 1))
                yield batch.select(list(range(batch.num_columns - 1)))
            return
        if self.dialect != "mysql" or self.column is None:
            async for batch in batches:
                yield batch
            return
        if self.nothing:
            async for batch in batches:
                yield batch.slice(0, 0)
            return
        index = self.schema.arrow.get_field_index(self.column.name)
        async for batch in batches:
            values = batch.column(index)
            if self._old_value is not None and self._drop:
                at_old = pc.fill_null(pc.equal(values, self._old_value), False)
                if pc.any(at_old).as_py():
                    keep = [True] * batch.num_rows
                    rows = batch.to_pylist()
                    for i in pc.indices_nonzero(at_old).to_pylist():
                        fp = fingerprint(rows[i], self._drop_fields)
                        if self._drop[fp] > 0:
                            self._drop[fp] -= 1
                            keep[i] = False
                    batch = batch.filter(pa.array(keep))
                    values = batch.column(index)
            if self._boundary_value is not None:
                at_new = pc.fill_null(pc.equal(values, self._boundary_value), False)
                if pc.any(at_new).as_py():
                    rows = batch.filter(at_new).to_pylist()
                    self.boundary_rows.extend(fingerprint(r, self.schema.arrow.names) for r in rows)
            yield batch

    def _note_transactions(self, xmin: pa.Array) -> None:
        """Add the 64-bit ids of the rows' transactions from this snapshot's xmin on to ``seen``
        (a 32-bit xid above the horizon's low bits is from the epoch before)."""
        base, low = self._horizon & ~0xFFFFFFFF, self._horizon & 0xFFFFFFFF
        xids = pc.add(xmin, pc.if_else(pc.greater(xmin, low), base - (1 << 32), base))
        recent = pc.filter(xids, pc.greater_equal(xids, self._seen_from))
        if len(recent):
            self._seen.update(pc.unique(recent).to_pylist())

    async def next(self, source: Any, fields: list[LoadField]) -> Watermark | None:
        """The watermark this import's load records when it succeeds."""
        if not self.spec.id_column or self.column is None:
            return None
        wm = None if self.full else self.previous.watermark
        if self.dialect == "postgres":
            value = await source.fetchval(*max_query(self.query, self.column, "postgres"))
            if value is None and wm is not None:
                value = wm.value
            opened = [*(wm.open_snapshots if wm else []), (value, self.snapshot)]
            floor = wm.floor if wm else None
            xmin_now, _ = _snapshot_bounds(self.snapshot or "0:0:")
            close = None
            for i in range(len(opened) - 1):
                if xmin_now >= _snapshot_bounds(opened[i + 1][1])[1]:
                    close = i
            if close is not None:
                floor, opened = opened[close][0], opened[close:]
            if len(opened) > MAX_OPEN_SNAPSHOTS:
                floor, opened = opened[-MAX_OPEN_SNAPSHOTS - 1][0], opened[-MAX_OPEN_SNAPSHOTS:]
            return Watermark(column=self.spec.id_column, value=value, snapshot=self.snapshot, floor=floor,
                             open_snapshots=[tuple(o) for o in opened], fields=fields,
                             seen=sorted(x - self._seen_from for x in self._seen), cut=self._cut)
        if self.upper is None:
            value = wm.value if wm is not None else None
            return Watermark(column=self.spec.id_column, value=value,
                             boundary=list(wm.boundary) if wm else [], fields=fields)
        boundary = list(self.boundary_rows)
        if wm is not None and wm.value is not None and self._old_value is not None \
                and self._old_value.equals(self._boundary_value):
            boundary = list(wm.boundary) + boundary  # still at the same value: all rows loaded there
        return Watermark(column=self.spec.id_column, value=self.upper, boundary=boundary, fields=fields)


def _bound(column: Column, text: Any) -> Any:
    """A MySQL bound typed as its column (a string bound would compare numbers as doubles)."""
    if text is None:
        return None
    if column.bigquery == "INT64":
        return int(text)
    if column.bigquery in ("NUMERIC", "BIGNUMERIC"):
        return decimal.Decimal(str(text))
    return text


def _scalar(column: Column, text: Any) -> pa.Scalar:
    """A MySQL value (as its text) as the Arrow value the reader makes of it."""
    return mysql_source._column(column, (str(text),))[0]

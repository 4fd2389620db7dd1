"""Column-level lineage over the catalog: where a column comes from, and what depends on it.

Schemas come from the catalog itself: the output columns of every parent summary table (as far
as its SQL determines them). Where a parent's columns cannot be known (``SELECT *`` over an
external source), lineage through it is as precise as the SQL alone allows.
"""

from __future__ import annotations

from typing import Any

import orjson

from maestro.catalog.sql import TableRef, column_lineage, output_columns
from maestro.errors import MaestroError
from maestro.handlers.catalog.service import CatalogService


async def _specs(catalog: CatalogService, ids: set[str]) -> dict[str, dict[str, Any]]:
    rows = await catalog.pool.fetch(
        "SELECT table_id, spec::text FROM catalog_tables WHERE table_id = ANY($1) AND NOT deleted",
        list(ids),
    )
    return {r[0]: orjson.loads(r[1]) for r in rows}


def _key(catalog: CatalogService, spec: dict[str, Any]) -> str:
    project = (spec.get("project") or catalog.default_project or "").lower()
    return f"{project}.{spec['dataset']}.{spec['name']}"


def _columns(catalog: CatalogService, spec: dict[str, Any], schemas: dict[str, dict[str, str]]) -> list[str]:
    if spec.get("kind") != "summary":
        return []
    try:
        return output_columns(spec["query"], default_project=catalog.default_project, schemas=schemas)
    except MaestroError:
        return []


async def _schemas(catalog: CatalogService, table_id: str) -> dict[str, dict[str, str]]:
    """Known schemas of the table's parents (column types are not known before a run)."""
    # The tables the SQL reads: not_dependencies still feed columns, depends_on ones feed none.
    found = catalog.deps.resolution(table_id)
    parents = (found.parents - found.declared) | found.ignored
    schemas: dict[str, dict[str, str]] = {}
    for spec in (await _specs(catalog, set(parents))).values():
        cols = [c for c in _columns(catalog, spec, {}) if c != "*"]
        if cols:
            schemas[_key(catalog, spec)] = {c: "UNKNOWN" for c in cols}
    return schemas


def _resolve(catalog: CatalogService, ref: TableRef) -> str | None:
    tid = catalog.deps.by_name.get((ref.dataset, ref.name))
    return tid


async def column_sources(catalog: CatalogService, table_id: str, column: str) -> list[dict[str, Any]]:
    spec = (await _specs(catalog, {table_id}))[table_id]
    if spec.get("kind") != "summary":
        return []
    sources = column_lineage(
        spec["query"], column, default_project=catalog.default_project,
        schemas=await _schemas(catalog, table_id),
    )
    return [
        {"table": str(s.table), "table_id": _resolve(catalog, s.table), "column": s.column}
        for s in sources
    ]


async def impact(catalog: CatalogService, table_id: str, column: str) -> list[dict[str, Any]]:
    """Every downstream (table, column) deriving from ``column`` of ``table_id``, transitively."""
    impacted: set[tuple[str, str]] = {(table_id, column)}
    graph = catalog.deps.graph
    descendants = graph.descendants(table_id)
    order = [n for generation in graph.subgraph(descendants | {table_id}).topological_generations() for n in generation]
    specs = await _specs(catalog, descendants)
    found: list[dict[str, Any]] = []
    for tid in order:
        if tid == table_id or tid not in specs:
            continue
        spec = specs[tid]
        schemas = await _schemas(catalog, tid)
        for out in _columns(catalog, spec, schemas):
            if out == "*":
                continue
            try:
                sources = column_lineage(spec["query"], out, default_project=catalog.default_project, schemas=schemas)
            except MaestroError:
                continue
            if any((_resolve(catalog, s.table), s.column) in impacted for s in sources):
                impacted.add((tid, out))
                found.append({"table_id": tid, "table": f"{spec['dataset']}.{spec['name']}", "column": out})
    return found

"""Drawings as SVG, made on the server: a run's DAG, a Gantt chart of its jobs, a bar chart.

Drawing on the server keeps the browser from laying out a graph (where Dagster's and Airflow's
UIs stall at a few hundred nodes): the page arrives drawn, the live script only changes the
``state-*`` class of a node. Layout is by layers: a table's column is the length of the longest
path to it from a table with no parent in the run; rows keep the run's order within a column.
Every label is escaped here, which is why the result may be marked safe.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 200, 30, 60, 14, 12
MAX_NODES = 600  # beyond this the drawing is unreadable anyway; the table lists every table


def layers(tables: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Each table's column: its longest path from a root of the run.

    >>> layers([{"table_id": "a", "parents": []}, {"table_id": "b", "parents": ["a"]},
    ...         {"table_id": "c", "parents": ["a", "b"]}])
    {'a': 0, 'b': 1, 'c': 2}
    """
    parents = {t["table_id"]: [p for p in t["parents"]] for t in tables}
    depth: dict[str, int] = {}
    for start in parents:
        stack = [(start, False)]
        while stack:  # iterative DFS: runs can be deep, recursion limits are not
            node, expanded = stack.pop()
            if node in depth:
                continue
            known = [p for p in parents.get(node, []) if p in parents]
            if expanded or not known:
                depth[node] = 1 + max((depth.get(p, 0) for p in known), default=-1)
                continue
            stack.append((node, True))
            stack.extend((p, False) for p in known if p not in depth)
    return depth


def _label(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dag(tables: Sequence[dict[str, Any]]) -> Markup | None:
    if not tables or len(tables) > MAX_NODES:
        return None
    depth = layers(tables)
    columns: dict[int, list[str]] = {}
    for t in tables:
        columns.setdefault(depth[t["table_id"]], []).append(t["table_id"])
    at: dict[str, tuple[int, int]] = {}
    for col, ids in columns.items():
        for row, tid in enumerate(ids):
            at[tid] = (PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    width = PAD * 2 + (max(columns) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(len(ids) for ids in columns.values()) * (NODE_H + GAP_Y) - GAP_Y
    parts = [f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="The run\'s tables and their dependencies">']
    for t in tables:
        x2, y2 = at[t["table_id"]]
        for p in t["parents"]:
            if p in at:
                x1, y1 = at[p]
                sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
                mid = (sx + ex) / 2
                parts.append(f'<path class="edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"/>')
    for t in tables:
        x, y = at[t["table_id"]]
        tid, state = escape(t["table_id"]), escape(t["state"])
        parts.append(
            f'<g class="node state-{state}" data-table-state="{tid}" transform="translate({x},{y})">'
            f'<a href="/tables/{tid}"><title>{escape(t["name"])}: {state}</title>'
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="5"/>'
            f'<text x="8" y="19">{escape(_label(t["name"]))}</text></a></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def gantt(jobs: Sequence[dict[str, Any]], now: dt.datetime) -> Markup | None:
    """One bar per job from its plan (or submission) to its end (or now, while it runs)."""
    spans = [(j, j["submitted_at"] or j["planned_at"], j["finished_at"] or now) for j in jobs if j["planned_at"]]
    if not spans:
        return None
    start = min(s for _, s, _ in spans)
    end = max(e for _, _, e in spans)
    total = max((end - start).total_seconds(), 1e-3)
    label_w, bar_w, row_h = 240, 640, 20
    height = PAD * 2 + len(spans) * row_h + 16
    parts = [f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {label_w + bar_w + PAD * 2} {height}" '
             f'width="{label_w + bar_w + PAD * 2}" height="{height}" role="img" aria-label="When each job ran">']
    for i, (j, s, e) in enumerate(spans):
        y = PAD + i * row_h
        x = label_w + bar_w * (s - start).total_seconds() / total
        w = max(2.0, bar_w * (e - s).total_seconds() / total)
        seconds = (e - s).total_seconds()
        name = escape(_label(f"{j['name']} ({j['kind']})", 36))
        parts.append(f'<text x="{PAD}" y="{y + 14}">{name}</text>'
                     f'<rect class="bar state-{escape(j["state"])}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}">'
                     f'<title>{name}: {escape(j["state"])}, {seconds:.1f} s</title></rect>')
    parts.append(f'<text x="{label_w}" y="{height - 4}">0 s</text>'
                 f'<text x="{label_w + bar_w - 40}" y="{height - 4}">{total:.1f} s</text></svg>')
    return Markup("".join(parts))


def bars(items: Sequence[tuple[str, float]], *, unit: str = "$") -> Markup | None:
    """A horizontal bar chart of (label, value), largest first as given."""
    if not items:
        return None
    top = max(v for _, v in items) or 1.0
    label_w, bar_w, row_h = 260, 480, 22
    height = PAD * 2 + len(items) * row_h
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {label_w + bar_w + 120} {height}" '
             f'width="{label_w + bar_w + 120}" height="{height}" role="img" aria-label="Cost chart">']
    for i, (label, value) in enumerate(items):
        y = PAD + i * row_h
        w = max(1.0, bar_w * value / top)
        parts.append(f'<text x="0" y="{y + 15}">{escape(_label(label, 38))}</text>'
                     f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{unit}{value:,.4f}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

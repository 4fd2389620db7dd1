"""The UI's pure parts: drawings escape what they draw, layers, formatting, links to objects."""

from __future__ import annotations

import datetime as dt
import doctest

from maestro.handlers.people import login_links
from maestro.http.ui import admin, render, reports, svg


def test_doctests() -> None:
    for module in (svg, render, reports, login_links):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_the_dag_escapes_names_and_places_children_after_parents() -> None:
    tables = [
        {"table_id": "a", "name": "ds.<script>", "state": "succeeded", "parents": []},
        {"table_id": "b", "name": "ds.b", "state": "running", "parents": ["a"]},
        {"table_id": "c", "name": "ds.c", "state": "pending", "parents": ["a", "b", "gone"]},
    ]
    drawn = str(svg.dag(tables))
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn
    assert drawn.count("<path") == 3  # a->b, a->c, b->c; a parent outside the run draws nothing
    assert 'data-table-state="b"' in drawn and "state-running" in drawn
    assert svg.dag([{"table_id": str(i), "name": "x", "state": "pending", "parents": []}
                    for i in range(svg.MAX_NODES + 1)]) is None


def test_layers_survive_a_long_chain() -> None:
    chain = [{"table_id": f"t{i}", "parents": [f"t{i - 1}"] if i else []} for i in range(5000)]
    assert svg.layers(chain)["t4999"] == 4999  # no recursion limit


def test_the_gantt_spans_each_job_to_its_end_or_now() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    jobs = [{"name": "ds.a", "kind": "query", "state": "succeeded", "planned_at": t0, "submitted_at": t0,
             "finished_at": t0 + dt.timedelta(seconds=10)},
            {"name": "ds.b", "kind": "query", "state": "running", "planned_at": t0 + dt.timedelta(seconds=10),
             "submitted_at": None, "finished_at": None}]
    drawn = str(svg.gantt(jobs, t0 + dt.timedelta(seconds=20)))
    assert drawn.count('class="bar') == 2 and "20.0 s" in drawn
    assert svg.gantt([], t0) is None


def test_next_slots_of_a_frequency() -> None:
    after = dt.datetime(2026, 1, 1, 10, 30, tzinfo=dt.timezone.utc)
    slots = admin.next_slots({"name": "hourly", "period": 3600, "offset": 0, "active": True}, after=after)
    assert [s.hour for s in slots] == [11, 12, 13]
    assert admin.next_slots({"name": "off", "period": 3600, "active": False}, after=after) == []

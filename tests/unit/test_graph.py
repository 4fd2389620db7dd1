"""Unit tests of the dependency graph (maestro/catalog/graph.py): pure, no database."""

from __future__ import annotations

import doctest
import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maestro.catalog import graph as graph_module
from maestro.catalog.graph import DependencyGraph
from maestro.errors import CycleDetected, NotFound, ValidationFailed

# The hand-drawn DAG most tests use (edges parent -> child):
#
#     raw_a   raw_b        lonely
#        \   /   \
#        clean    other
#        /   \
#     report  mart
#               \
#               dash
EDGES = [
    ("raw_a", "clean"),
    ("raw_b", "clean"),
    ("raw_b", "other"),
    ("clean", "report"),
    ("clean", "mart"),
    ("mart", "dash"),
]


@pytest.fixture
def g() -> DependencyGraph:
    return DependencyGraph.from_edges(["lonely"], EDGES)


# -- random DAGs and brute-force oracles ------------------------------------------------------


Dag = tuple[list[str], list[tuple[str, str]]]


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 60) -> Dag:
    """Nodes and edges of a random DAG; keys are shuffled so key order says nothing about depth."""
    n = draw(st.integers(0, max_nodes))
    keys = draw(st.permutations([f"n{i:02d}" for i in range(n)]))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.sets(st.sampled_from(pairs), max_size=3 * n)) if pairs else set()
    return keys, [(keys[i], keys[j]) for i, j in sorted(chosen)]


def reachable(edges: list[tuple[str, str]], start: str) -> set[str]:
    """Every node reachable from ``start`` (``start`` itself only if it is on a cycle)."""
    children: dict[str, list[str]] = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    seen: set[str] = set()
    queue = deque([start])
    while queue:
        for child in children.get(queue.popleft(), []):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return seen


def shortest_cycle_length(edges: list[tuple[str, str]], key: str) -> int:
    """The number of edges in the shortest cycle through ``key`` (BFS back to ``key``)."""
    distance = {key: 0}
    queue = deque([key])
    while queue:
        node = queue.popleft()
        for parent, child in edges:
            if parent != node:
                continue
            if child == key:
                return distance[node] + 1
            if child not in distance:
                distance[child] = distance[node] + 1
                queue.append(child)
    raise AssertionError(f"no cycle through {key}")


def assert_is_cycle(path: list[str], edges: set[tuple[str, str]]) -> None:
    assert len(path) >= 2 and path[0] == path[-1]
    assert len(set(path[:-1])) == len(path) - 1, "a simple cycle visits each node once"
    for step in zip(path, path[1:]):
        assert step in edges


# -- basic structure --------------------------------------------------------------------------


def test_parents_children_ancestors_descendants(g: DependencyGraph) -> None:
    assert g.parents("clean") == {"raw_a", "raw_b"}
    assert g.children("clean") == {"report", "mart"}
    assert g.ancestors("dash") == {"mart", "clean", "raw_a", "raw_b"}
    assert g.descendants("raw_b") == {"clean", "other", "report", "mart", "dash"}
    assert g.parents("raw_a") == set() and g.children("dash") == set()
    assert g.ancestors("lonely") == set() and g.descendants("lonely") == set()
    assert g.descendant_count("raw_b") == 5
    assert g.descendant_count("clean") == 3


def test_diamond_counts_shared_descendants_once() -> None:
    g = DependencyGraph.from_edges([], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert g.descendant_count("a") == 3
    assert g.priorities() == {"a": 3, "b": 1, "c": 1, "d": 0}


def test_nodes_edges_len_contains_and_to_dict(g: DependencyGraph) -> None:
    assert len(g) == 8
    assert "clean" in g and "nope" not in g
    assert g.nodes() == sorted(g.nodes())
    assert g.edges() == sorted(EDGES)
    assert g.to_dict() == {
        "nodes": ["clean", "dash", "lonely", "mart", "other", "raw_a", "raw_b", "report"],
        "edges": [{"parent": p, "child": c} for p, c in sorted(EDGES)],
    }


def test_empty_graph() -> None:
    g = DependencyGraph()
    assert len(g) == 0
    assert g.priorities() == {} and g.topological_generations() == []
    assert g.to_dict() == {"nodes": [], "edges": []}


def test_add_node_is_idempotent(g: DependencyGraph) -> None:
    before = g.to_dict()
    g.add_node("clean")
    assert g.to_dict() == before
    g.add_node("new")
    assert "new" in g and g.parents("new") == set()


@pytest.mark.parametrize(
    "query", ["parents", "children", "ancestors", "descendants", "descendant_count"]
)
def test_unknown_key_is_not_found(g: DependencyGraph, query: str) -> None:
    with pytest.raises(NotFound, match="'ghost'") as info:
        getattr(g, query)("ghost")
    assert info.value.details == {"key": "ghost"}


def test_unknown_key_in_subgraph_and_neighbourhood_is_not_found(g: DependencyGraph) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        g.subgraph(["clean", "ghost"])
    with pytest.raises(NotFound, match="'ghost'"):
        g.neighbourhood("ghost", 1)


# -- mutation ---------------------------------------------------------------------------------


def test_remove_node_removes_its_edges(g: DependencyGraph) -> None:
    g.remove_node("clean")
    assert "clean" not in g
    assert ("raw_a", "clean") not in g.edges() and g.children("raw_a") == set()
    assert g.parents("report") == set() and g.parents("mart") == set()
    assert g.priorities()["raw_b"] == 1
    g.remove_node("clean")  # missing: a no-op
    g.remove_node("never-there")
    assert len(g) == 7


def test_removed_slot_reuse_does_not_confuse_keys(g: DependencyGraph) -> None:
    # rustworkx reuses the index of a removed node; the key map must not point at the newcomer.
    g.remove_node("clean")
    g.add_node("fresh")
    assert g.parents("fresh") == set() and g.children("fresh") == set()
    assert g.children("raw_a") == set()
    g.set_parents("fresh", ["raw_a"])
    assert g.children("raw_a") == {"fresh"}


def test_set_parents_replaces_incoming_edges(g: DependencyGraph) -> None:
    g.set_parents("clean", ["raw_b", "lonely", "lonely"])
    assert g.parents("clean") == {"raw_b", "lonely"}
    assert g.children("raw_a") == set()
    assert g.children("clean") == {"report", "mart"}  # outgoing edges untouched
    g.set_parents("clean", [])
    assert g.parents("clean") == set()


def test_set_parents_adds_missing_key_and_parents(g: DependencyGraph) -> None:
    g.set_parents("brand_new", ["mart", "also_new"])
    assert g.parents("brand_new") == {"mart", "also_new"}
    assert "also_new" in g and g.parents("also_new") == set()
    assert g.descendant_count("clean") == 4


def test_set_parents_refuses_a_bare_string(g: DependencyGraph) -> None:
    with pytest.raises(TypeError):
        g.set_parents("clean", "raw_a")


def test_priorities_cache_follows_mutations(g: DependencyGraph) -> None:
    assert g.priorities()["raw_a"] == 4
    g.set_parents("other", ["dash"])
    assert g.priorities()["raw_a"] == 5
    g.remove_node("mart")
    assert g.priorities()["raw_a"] == 2
    g.priorities()["raw_a"] = 99  # callers get a copy, not the cache
    assert g.priorities()["raw_a"] == 2


def test_copy_is_independent(g: DependencyGraph) -> None:
    priorities = g.priorities()  # cached before the copy: the clone must not serve it stale
    clone = g.copy()
    clone.set_parents("dash", ["report"])
    clone.remove_node("raw_a")
    assert clone.priorities()["report"] == 1
    rebuilt = DependencyGraph.from_edges(clone.nodes(), clone.edges())
    assert clone.priorities() == rebuilt.priorities()
    assert g.priorities() == priorities
    assert g.to_dict() == DependencyGraph.from_edges(["lonely"], EDGES).to_dict()
    assert clone.parents("dash") == {"report"} and "raw_a" not in clone


# -- cycles -----------------------------------------------------------------------------------


def test_self_parent_is_a_one_node_cycle(g: DependencyGraph) -> None:
    with pytest.raises(CycleDetected) as info:
        g.set_parents("clean", ["raw_a", "clean"])
    assert info.value.path == ["clean", "clean"]
    with pytest.raises(CycleDetected) as info:
        DependencyGraph().set_parents("x", ["x"])  # even for a key not in the graph yet
    assert info.value.path == ["x", "x"]


def test_two_node_cycle() -> None:
    g = DependencyGraph.from_edges([], [("a", "b")])
    with pytest.raises(CycleDetected) as info:
        g.set_parents("a", ["b"])
    assert info.value.path == ["a", "b", "a"]
    assert str(info.value) == "dependency cycle: a -> b -> a"


def test_three_node_cycle_reports_exact_path() -> None:
    g = DependencyGraph.from_edges([], [("a", "b"), ("b", "c")])
    with pytest.raises(CycleDetected) as info:
        g.set_parents("a", ["c"])
    assert info.value.path == ["a", "b", "c", "a"]
    assert info.value.details == {"path": ["a", "b", "c", "a"], "cycles": [["a", "b", "c", "a"]]}


def test_from_edges_reports_every_cycle_and_breaking_them_all_leaves_a_dag() -> None:
    edges = [
        ("a", "b"), ("b", "a"),  # one pair
        ("p", "q"), ("q", "r"), ("r", "p"), ("q", "p"),  # a component holding two cycles
        ("s", "s"),  # a self-loop
        ("a", "p"), ("x", "y"),  # edges on no cycle
    ]
    with pytest.raises(CycleDetected) as info:
        DependencyGraph.from_edges(["lonely"], edges)
    cycles = info.value.cycles
    assert cycles == [["a", "b", "a"], ["p", "q", "p"], ["s", "s"], ["p", "q", "r", "p"]]
    assert info.value.path == cycles[0] and info.value.details["cycles"] == cycles
    assert str(info.value).startswith("4 dependency cycles: a -> b -> a; p -> q -> p; s -> s; ")
    for cycle in cycles:
        assert_is_cycle(cycle, set(edges))
    # Breaking each reported cycle at its last edge is enough: what is left is acyclic.
    broken = {(cycle[-2], cycle[0]) for cycle in cycles}
    DependencyGraph.from_edges([], [e for e in edges if e not in broken])
    # And the answer does not depend on the order the edges came in.
    with pytest.raises(CycleDetected) as again:
        DependencyGraph.from_edges([], list(reversed(edges)))
    assert again.value.cycles == cycles


def test_long_cycle_reports_every_step() -> None:
    keys = [f"t{i:03d}" for i in range(200)]
    g = DependencyGraph.from_edges([], list(zip(keys, keys[1:])))
    with pytest.raises(CycleDetected) as info:
        g.set_parents(keys[0], [keys[-1]])
    assert info.value.path == keys + [keys[0]]


def test_shortest_cycle_is_reported() -> None:
    # Two ways back to a from z: a long one via b, c, d and a short one via x.
    g = DependencyGraph.from_edges(
        [], [("a", "b"), ("b", "c"), ("c", "d"), ("d", "z"), ("a", "x"), ("x", "z")]
    )
    with pytest.raises(CycleDetected) as info:
        g.set_parents("a", ["z", "c"])
    assert info.value.path == ["a", "b", "c", "a"]
    with pytest.raises(CycleDetected) as info:
        g.set_parents("a", ["z"])
    assert info.value.path == ["a", "x", "z", "a"]


def test_refused_change_leaves_graph_exactly_as_it_was(g: DependencyGraph) -> None:
    before, priorities_before = g.to_dict(), g.priorities()
    with pytest.raises(CycleDetected) as info:
        # would drop raw_a, add unknown "fresh" and close clean -> mart -> dash -> clean
        g.set_parents("clean", ["raw_b", "fresh", "dash"])
    assert info.value.path == ["clean", "mart", "dash", "clean"]
    assert g.to_dict() == before
    assert g.priorities() == priorities_before
    assert "fresh" not in g


def test_check_parents_never_mutates(g: DependencyGraph) -> None:
    before = g.to_dict()
    g.check_parents("clean", ["raw_b", "lonely", "fresh"])  # legal: nothing happens
    g.check_parents("not_yet", ["clean", "fresh"])
    assert g.to_dict() == before
    with pytest.raises(CycleDetected) as info:
        g.check_parents("raw_b", ["report"])
    assert info.value.path == ["raw_b", "clean", "report", "raw_b"]
    assert g.to_dict() == before


def test_existing_parents_are_not_a_cycle(g: DependencyGraph) -> None:
    g.set_parents("clean", ["raw_a", "raw_b"])  # unchanged parents: no error
    assert g.parents("clean") == {"raw_a", "raw_b"}


@pytest.mark.parametrize(
    ("edges", "path"),
    [
        ([("q", "q")], ["q", "q"]),
        ([("b", "a"), ("a", "b")], ["a", "b", "a"]),
        ([("x", "c"), ("c", "b"), ("b", "d"), ("d", "c")], ["b", "d", "c", "b"]),
    ],
)
def test_from_edges_refuses_cycles_deterministically(
    edges: list[tuple[str, str]], path: list[str]
) -> None:
    for order in (edges, edges[::-1]):
        with pytest.raises(CycleDetected) as info:
            DependencyGraph.from_edges([], order)
        assert info.value.path == path


@settings(max_examples=60)
@given(dag=dags(max_nodes=30), data=st.data())
def test_set_parents_property(dag: Dag, data: st.DataObject) -> None:
    """Random edit of a random DAG: accepted iff acyclic; refused edits report a real cycle."""
    keys, edges = dag
    if not keys:
        return
    g = DependencyGraph.from_edges(keys, edges)
    key = data.draw(st.sampled_from(keys))
    parents = data.draw(st.sets(st.sampled_from(keys), max_size=4))
    proposed = [(p, c) for p, c in edges if c != key] + [(p, key) for p in parents]
    # Any cycle would use a new edge, so it would pass through key: cyclic iff key reaches itself.
    cyclic = key in reachable(proposed, key)
    before = g.to_dict()
    try:
        g.set_parents(key, parents)
    except CycleDetected as exc:
        assert cyclic
        assert exc.path[0] == exc.path[-1] == key
        assert_is_cycle(exc.path, set(proposed))
        assert len(exc.path) - 1 == shortest_cycle_length(proposed, key)
        assert g.to_dict() == before
    else:
        assert not cyclic
        assert g.parents(key) == parents
        assert g.to_dict() == DependencyGraph.from_edges(keys, proposed).to_dict()


# -- priorities and generations ---------------------------------------------------------------


@given(dags())
def test_priorities_equal_brute_force_bfs(dag: Dag) -> None:
    keys, edges = dag
    g = DependencyGraph.from_edges(keys, edges)
    expected = {key: len(reachable(edges, key)) for key in keys}
    assert g.priorities() == expected
    for key in keys[:5]:
        assert g.descendant_count(key) == expected[key]
        assert g.descendants(key) == reachable(edges, key)


@given(dags())
def test_topological_generations_are_valid_and_earliest(dag: Dag) -> None:
    keys, edges = dag
    g = DependencyGraph.from_edges(keys, edges)
    generations = g.topological_generations()
    rank = {key: i for i, generation in enumerate(generations) for key in generation}
    assert sorted(rank) == sorted(keys) and sum(map(len, generations)) == len(keys)
    for parent, child in edges:
        assert rank[parent] < rank[child]
    for key in keys:  # earliest possible: right after the latest parent
        assert rank[key] == max((rank[p] + 1 for p in g.parents(key)), default=0)
    priority = g.priorities()
    for generation in generations:
        assert generation == sorted(generation, key=lambda k: (-priority[k], k))


@given(dags(), st.randoms(use_true_random=False))
def test_topological_generations_ignore_insertion_order(dag: Dag, rng: random.Random) -> None:
    keys, edges = dag
    shuffled_keys, shuffled_edges = keys[:], edges[:]
    rng.shuffle(shuffled_keys)
    rng.shuffle(shuffled_edges)
    first = DependencyGraph.from_edges(keys, edges)
    second = DependencyGraph.from_edges(shuffled_keys, shuffled_edges)
    assert first.topological_generations() == second.topological_generations()
    assert first.to_dict() == second.to_dict()


def test_topological_generations_order_by_priority_then_key(g: DependencyGraph) -> None:
    assert g.topological_generations() == [
        ["raw_b", "raw_a", "lonely"],
        ["clean", "other"],
        ["mart", "report"],
        ["dash"],
    ]


# -- subgraphs --------------------------------------------------------------------------------


def test_subgraph_is_induced_and_independent(g: DependencyGraph) -> None:
    sub = g.subgraph(["raw_a", "clean", "dash", "mart"])
    assert sub.nodes() == ["clean", "dash", "mart", "raw_a"]
    assert sub.edges() == [("clean", "mart"), ("mart", "dash"), ("raw_a", "clean")]
    sub.set_parents("dash", [])
    sub.add_node("extra")
    assert g.parents("dash") == {"mart"} and "extra" not in g
    assert g.subgraph([]).to_dict() == {"nodes": [], "edges": []}


@pytest.mark.parametrize(
    ("key", "depth", "direction", "nodes"),
    [
        ("clean", 0, "both", ["clean"]),
        ("clean", 1, "both", ["clean", "mart", "raw_a", "raw_b", "report"]),
        ("clean", 2, "down", ["clean", "dash", "mart", "report"]),
        ("clean", 1, "down", ["clean", "mart", "report"]),
        ("dash", 2, "up", ["clean", "dash", "mart"]),
        ("dash", None, "up", ["clean", "dash", "mart", "raw_a", "raw_b"]),
        ("raw_b", None, "down", ["clean", "dash", "mart", "other", "raw_b", "report"]),
        # "both" is lineage up plus lineage down, never sideways: raw_a's sibling paths stay out
        ("raw_a", None, "both", ["clean", "dash", "mart", "raw_a", "report"]),
        ("lonely", None, "both", ["lonely"]),
    ],
)
def test_neighbourhood(
    g: DependencyGraph, key: str, depth: int | None, direction: str, nodes: list[str]
) -> None:
    hood = g.neighbourhood(key, depth, direction)  # type: ignore[arg-type]
    assert hood.nodes() == nodes
    assert hood.to_dict() == g.subgraph(nodes).to_dict()  # induced edges


def test_neighbourhood_rejects_bad_arguments(g: DependencyGraph) -> None:
    with pytest.raises(ValidationFailed):
        g.neighbourhood("clean", 1, "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        g.neighbourhood("clean", -1)


def test_module_examples() -> None:
    result = doctest.testmod(graph_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

"""Timings of the dependency graph on a catalog-sized random DAG.

Run: ``python bench/bench_graph.py [nodes] [edges]`` (defaults 2,000 and 5,000). The catalog's
target is one table edit end to end at p50 <= 30 ms, so ``set_parents`` (with its cycle check)
must stay well under 1 ms.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, uninstalled

from maestro.catalog.graph import DependencyGraph  # noqa: E402
from maestro.errors import CycleDetected  # noqa: E402


def random_dag(rng: random.Random, nodes: int, edges: int) -> DependencyGraph:
    """Edges only from a lower to a higher number, so the graph is acyclic by construction."""
    keys = [f"t{i:05d}" for i in range(nodes)]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < edges:
        a, b = sorted(rng.sample(range(nodes), 2))
        pairs.add((a, b))
    return DependencyGraph.from_edges(keys, [(keys[a], keys[b]) for a, b in pairs])


def timed(fn, repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(name: str, times: list[float]) -> None:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    p50 = statistics.median(times)
    print(f"{name:<44} p50 {p50:8.3f} ms   p95 {p95:8.3f} ms   max {times[-1]:8.3f} ms")


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    edges = int(sys.argv[2]) if len(sys.argv) > 2 else 5_000
    rng = random.Random(42)
    start = time.perf_counter()
    graph = random_dag(rng, nodes, edges)
    print(f"random DAG: {len(graph)} nodes, {len(graph.edges())} edges "
          f"(built in {(time.perf_counter() - start) * 1000:.1f} ms)")

    # priorities() caches per graph version (copies share the cache), so each timed call gets a
    # fresh rebuild of the graph to measure the real computation.
    def fresh() -> DependencyGraph:
        return DependencyGraph.from_edges(graph.nodes(), graph.edges())

    copies = [fresh() for _ in range(20)]
    report("priorities() (uncached)", timed(lambda: copies.pop().priorities(), 20))
    graph.priorities()
    report("priorities() (cached)", timed(graph.priorities, 20))
    copies = [fresh() for _ in range(20)]
    generations = timed(lambda: copies.pop().topological_generations(), 20)
    report("topological_generations() (uncached)", generations)

    # A typical edit: a table's SQL now reads 1-4 tables that come earlier in the order (legal).
    keys = graph.nodes()

    def legal_edit() -> None:
        child = rng.randrange(1, nodes)
        parents = [keys[p] for p in rng.sample(range(child), min(child, rng.randint(1, 4)))]
        graph.set_parents(keys[child], parents)

    report("set_parents (legal, with cycle check)", timed(legal_edit, 200))

    # The worst legal case for the check: the node with the most descendants gets a new, existing
    # parent, so the check walks most of what lies below it.
    priority = graph.priorities()
    top = max(priority, key=priority.__getitem__)
    spare = [f"spare{i:03d}" for i in range(200)]
    for key in spare:
        graph.add_node(key)
    print(f"root-most node {top} has {priority[top]} descendants")
    root_edits = timed(lambda: graph.set_parents(top, [spare.pop()]), 200)
    report("set_parents (root-most node)", root_edits)

    # A refused edit: the parent is a descendant, so the check must find and describe the cycle.
    def refused_edit() -> None:
        key = keys[rng.randrange(nodes // 4)]
        below = sorted(graph.descendants(key))
        if not below:
            return
        try:
            graph.set_parents(key, [rng.choice(below)])
        except CycleDetected:
            pass
        else:  # pragma: no cover - would be a bug in the graph
            raise AssertionError("cycle not detected")

    report("set_parents (refused, cycle path built)", timed(refused_edit, 200))
    report("check_parents (legal)", timed(lambda: graph.check_parents(keys[-1], keys[:3]), 200))


if __name__ == "__main__":
    main()

"""The import graph: no cycles among the simulator's (and the profiles') modules (the simulator's scenario runner used to import
its steps, which imported the runner back), and nothing imports ``dashbridge.simulator.__main__``
(the command line is a leaf: what it shares with ``shell`` lives in ``simulator/worldargs.py``)."""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("dashbridge")


def _cycles(graph: grimp.ImportGraph, prefix: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), among ``prefix*``."""
    mods = sorted(m for m in graph.modules if m == prefix or m.startswith(prefix + "."))
    adj = {m: sorted(x for x in graph.find_modules_directly_imported_by(m) if x in mods or x.startswith(prefix + "."))
           for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in adj.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in mods:
        if m not in index:
            visit(m)
    return out


# Cycles already there, for their owners to break (then delete the entry).
KNOWN_CYCLES: list[list[str]] = []


@pytest.mark.parametrize("prefix", ["dashbridge.simulator", "dashbridge.profiles", "dashbridge.daemon"])
def test_no_import_cycles(graph: grimp.ImportGraph, prefix: str) -> None:
    assert [c for c in _cycles(graph, prefix) if c not in KNOWN_CYCLES] == []


def test_scenario_package_layers(graph: grimp.ImportGraph) -> None:
    """Each module of simulator/scenario/ imports only those listed before it."""
    order = ["values", "matchers", "registry", "schema", "runner", "builtin_steps", "steps", "workers", "report"]
    pkg = "dashbridge.simulator.scenario"
    for i, name in enumerate(order):
        later = {f"{pkg}.{x}" for x in order[i + 1:]}
        wrong = later & graph.find_modules_directly_imported_by(f"{pkg}.{name}")
        assert not wrong, f"{name} imports {sorted(wrong)}"


def test_nothing_imports_the_command_line(graph: grimp.ImportGraph) -> None:
    assert graph.find_modules_that_directly_import("dashbridge.simulator.__main__") == set()

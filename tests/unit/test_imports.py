"""The import graph of the four packages: one direction, no cycles, every module on its own.

``memory_store`` <- ``agent`` <- ``graphs`` <- ``training``: a package imports only the ones
below it (``CONVENTIONS.md``). The graph is read by grimp (the import graph library behind
import-linter) from the source, so imports inside functions and under ``TYPE_CHECKING`` count:
an import moved into a function to dodge a cycle still shows here.

Each module must also import first, in an interpreter where no project module is loaded yet: a
cycle through a package's ``__init__`` (``a`` imports ``pkg.b``, which runs ``pkg/__init__``,
which imports ``a`` back) fails only in some import orders, and grimp does not see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGES = ("training", "graphs", "agent", "memory_store")  # highest layer first
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def _project(graph: grimp.ImportGraph) -> list[str]:
    return sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The project's strongly connected components of more than one module (Tarjan's
    algorithm, iterative), each sorted."""
    modules = _project(graph)
    edges = {
        m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules)
        for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(found)


def test_the_checks_find_a_cycle_and_an_upward_import() -> None:
    """The checks below cannot pass by finding nothing: imports added to a copy of the graph
    make a cycle and break the layers."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    graph.add_import(importer="memory_store.products", imported="memory_store.memory")
    assert any("memory_store.products" in c for c in _cycles(graph))
    graph.add_import(importer="memory_store.products", imported="agent.records")
    illegal = graph.find_illegal_dependencies_for_layers(layers=PACKAGES)
    assert ("memory_store", "agent") in {(d.importer, d.imported) for d in illegal}


def test_no_import_cycles_among_the_projects_modules(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_imports_point_down_the_layers(graph: grimp.ImportGraph) -> None:
    """memory_store <- agent <- graphs <- training: no package imports one above it."""
    illegal = graph.find_illegal_dependencies_for_layers(layers=PACKAGES)
    routes = sorted(
        f"{d.importer} -> {d.imported}: "
        + " | ".join(
            sorted(" -> ".join([*sorted(r.heads), *r.middle, *sorted(r.tails)]) for r in d.routes)
        )
        for d in illegal
    )
    assert routes == []


def test_the_packages_never_import_tests(graph: grimp.ImportGraph) -> None:
    importers = graph.find_modules_that_directly_import("tests") if "tests" in graph.modules else []
    assert sorted(importers) == []


# Run in one fresh interpreter: import every project module once (so the heavy third-party
# libraries they load, torch, transformers, trl, chromadb, are loaded once), forget the project's
# modules, then import each module in its own fork, where it is the first project module loaded.
# A fresh interpreter per module would load trl's stack each time (about 25 s each here).
_EACH_ON_ITS_OWN = r"""
import importlib, json, os, sys, traceback
modules = json.loads(sys.argv[1])
packages = tuple(json.loads(sys.argv[2]))
for m in modules:
    try:
        importlib.import_module(m)
    except BaseException:
        pass  # reported below, from the module's own fork
for name in [k for k in sys.modules if k.split(".")[0] in packages]:
    del sys.modules[name]
failed = {}
for m in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code, text = 0, b""
        try:
            importlib.import_module(m)
            stray = [k for k in sys.modules if k.split(".")[0] == "tests"]
            if stray:
                code, text = 1, f"imported {stray}".encode()
        except BaseException:
            code, text = 1, traceback.format_exc(limit=-3).encode()
        os.write(write, text)
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        failed[m] = text or f"exit status {status}"
print(json.dumps({"failed": failed, "count": len(modules)}))
"""


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_interpreter(graph: grimp.ImportGraph) -> None:
    # A package's __main__ runs its command when imported (``python -m graphs.cli``): not a library.
    modules = [m for m in _project(graph) if m.rsplit(".", 1)[-1] != "__main__"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _EACH_ON_ITS_OWN, json.dumps(modules), json.dumps(PACKAGES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["count"] == len(modules) > 60
    assert result["failed"] == {}


def test_the_graph_imports_without_the_heavy_libraries() -> None:
    """Studio and the tests import the graph; the model's libraries load when a model does."""
    heavy = ["torch", "transformers", "trl", "peft", "sentence_transformers", "lightgbm", "ray"]
    code = (
        "import sys, json, graphs.query_agent; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []

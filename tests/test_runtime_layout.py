"""`rio_sglang/runtime/` is layered: no import cycle among its modules (at import time; a
`TYPE_CHECKING` import is not one), and no module-level mutable container that would hold
requests between calls (a request's state lives in its `record.py::Record`)."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "rio_sglang" / "runtime"
PACKAGE = "rio_sglang.runtime"


def module_imports(path: Path) -> set[str]:
    """The runtime modules `path` imports at its top level."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found |= {a.name for a in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[2])
    return found & {p.stem for p in RUNTIME.glob("*.py")}


def test_runtime_has_no_import_cycle():
    graph = {p.stem: module_imports(p) for p in RUNTIME.glob("*.py")}
    assert graph["sampler"] == {"journal", "record"}
    assert "sampler" not in graph["record"] | graph["journal"]  # the old cycle
    done, path = set(), []

    def visit(name):
        assert name not in path, f"import cycle: {' -> '.join(path + [name])}"
        if name in done:
            return
        path.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


MUTABLE = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
FACTORIES = {"dict", "list", "set", "OrderedDict", "defaultdict", "deque"}


def mutable_globals(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            value = node.value
            call = isinstance(value, ast.Call) and getattr(value.func, "id", getattr(
                value.func, "attr", None)) in FACTORIES
            if isinstance(value, MUTABLE) or call:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names += [f"{path.name}::{ast.unparse(t)}" for t in targets]
    return names


def test_no_module_level_request_state():
    found = [n for p in sorted(RUNTIME.glob("*.py")) for n in mutable_globals(p)]
    assert found == []


def test_the_check_sees_a_registry():
    planted = "from collections import OrderedDict\nFINAL: dict = {}\nSEEN = OrderedDict()\n"
    probe = RUNTIME.parent.parent / "tests" / "_planted_registry.py"
    try:
        probe.write_text(planted)
        assert mutable_globals(probe) == ["_planted_registry.py::FINAL",
                                          "_planted_registry.py::SEEN"]
    finally:
        probe.unlink()

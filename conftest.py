"""Root pytest setup for tests/ and kernels/: CPU runs interpret Triton; `gpu` tests need CUDA.

TRITON_INTERPRET must be set before any Triton kernel is decorated, i.e. before test modules
import our kernels: a root conftest runs first.
"""

import json
import os
from pathlib import Path

import pytest

_HAS_CUDA = None


def _has_cuda() -> bool:
    global _HAS_CUDA
    if _HAS_CUDA is None:
        import torch

        _HAS_CUDA = torch.cuda.is_available()
    return _HAS_CUDA


if not _has_cuda():
    os.environ["TRITON_INTERPRET"] = "1"
    from rio_sglang.cpu.patches import skip_repatching_device_calls

    skip_repatching_device_calls()  # the interpreter's speed-up that the CPU servers use


# Every Python process started from here on (xdist workers, servers and their subprocesses, CLI
# and bench runs) imports tests/startup/sitecustomize.py first: rarer GC passes during imports.
STARTUP = str(Path(__file__).parent / "tests" / "startup")
if STARTUP not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (STARTUP, os.environ.get("PYTHONPATH")) if p)


def module_of(item) -> str:
    return item.nodeid.split("::", 1)[0]


# Two workers (scripts/test.sh runs pytest-xdist with --dist loadfile): a test module is one
# unit of work, so that its module-scoped servers and fixtures start once, in one worker; units
# go out longest first (tests/suite_weights.json: seconds per module in a measured run,
# `python -m bench.suite_times JUNIT --weights` rewrites it), so that the last to start is
# short. Without xdist the same order runs in one process. (Not --dist loadgroup: with pytest
# 9.2 its group suffix on the node id is lost, and a module's tests spread over both workers.)
WEIGHTS = Path(__file__).parent / "tests" / "suite_weights.json"
NEW_MODULE_WEIGHT = 60.0  # a module the table does not know yet: as long as a server module


def module_weights() -> dict[str, float]:
    return json.loads(WEIGHTS.read_text())["seconds"] if WEIGHTS.exists() else {}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    weights = module_weights()
    # Stable: each module's tests keep their order (pytest's own, by fixture params).
    items.sort(key=lambda it: -weights.get(module_of(it), NEW_MODULE_WEIGHT))
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA (a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session):
    # pytest imports kernels/*/test_*.py under the top-level name `kernels`, which is a real
    # PyPI package that transformers probes: drop the alias once the test modules are loaded.
    import sys

    for name in [m for m in sys.modules if m == "kernels" or m.startswith("kernels.")]:
        del sys.modules[name]

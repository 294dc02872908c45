"""Root pytest setup for tests/ and kernels/: CPU runs interpret Triton; `gpu` tests need CUDA.

TRITON_INTERPRET must be set before any Triton kernel is decorated, i.e. before test modules
import our kernels: a root conftest runs first.
"""

import os

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


def pytest_collection_modifyitems(config, items):
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

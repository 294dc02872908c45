"""rio_kernels: Triton ops, one folder each, with a plain-torch fp32 reference beside each kernel.

Each folder's `__init__` exports its kernels and references (see README.md). The references
load at once; a Triton module loads on first use (`lazy_exports`): Triton reads
TRITON_INTERPRET when it decorates a kernel, and `rio_sglang.reasoning` imports the references
without wanting the kernels.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: name -> the submodule that defines it, imported on
    first access (`from rio_kernels.swir_step import pre_sample` imports `swir_step.launch`)."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


def interpreted() -> bool:
    """Triton interprets (TRITON_INTERPRET=1, CPU tensors) rather than compiles for a GPU. The
    kernels' GPU choices (tiles, tuned tables, PDL, tensor-core formats) follow this, not the
    tensors' device, so that bench/hopper_compile.py compiles the GPU launches without a GPU."""
    import triton

    return triton.knobs.runtime.interpret

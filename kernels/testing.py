"""Shared by the kernel tests (kernels/*/test_*.py): the device, the dtypes, tolerances by output
dtype, and the poison fixture.

A test module takes the fixture by importing it (`from rio_kernels.testing import
poisoned_outputs`): it is autouse there, and it works without any conftest (tests/test_imports.py
collects the GPU checks' tests with --noconftest). CPU runs interpret Triton (TRITON_INTERPRET=1,
set by the root conftest) in fp32 / fp16; bf16 cases are `gpu` only.
"""

from __future__ import annotations

import pytest
import torch

from . import buffers

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16

# assert_close tolerances by output dtype, for an fp32 accumulation rounded once to that dtype
TOL = {
    FP32: {"atol": 1e-5, "rtol": 1e-5},
    FP16: {"atol": 2e-3, "rtol": 2e-3},
    BF16: {"atol": 2e-2, "rtol": 2e-2},
}
# ... and for two chained GEMMs whose intermediate is rounded to the dtype too (fused_moe)
TOL_TWO_GEMMS = {
    FP32: {"atol": 1e-4, "rtol": 1e-4},
    FP16: {"atol": 1e-2, "rtol": 1e-2},
    BF16: {"atol": 3e-2, "rtol": 3e-2},
}

INT_POISON = 1 << 30  # past any index, count or token id a kernel writes


def poison_value(dtype: torch.dtype) -> float | int | bool:
    """NaN for floats; for integers an out-of-range value (1 << 30, or the dtype's max)."""
    if dtype.is_floating_point:
        return float("nan")
    if dtype == torch.bool:
        return True
    return min(INT_POISON, torch.iinfo(dtype).max)


def poisoned_empty(shape: tuple[int, ...], dtype: torch.dtype,
                   device: torch.device | str) -> torch.Tensor:
    """`buffers.empty`, filled with `poison_value(dtype)`."""
    return torch.full(shape, poison_value(dtype), dtype=dtype, device=device)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every output and scratch buffer of every kernel starts poisoned, so that a lane the
    kernel forgets to write fails the comparison with the reference."""
    monkeypatch.setattr(buffers, "empty", poisoned_empty)

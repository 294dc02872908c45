"""Shared by the kernel benchmarks (kernels/*/bench_*.py, bench/bench_reasoning_step.py): the
device's measured memory ceiling, and the check a kernel passes before it is timed.
"""

from __future__ import annotations

import torch


def copy_ceiling_gbs(device: str = "cuda", nbytes: int = 1 << 30) -> float:
    """The device's memory ceiling in GB/s: a 1 GiB device-to-device copy (read + write), median
    time. Benchmarks report a kernel's GB/s as a fraction of it."""
    from triton.testing import do_bench

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / do_bench(lambda: dst.copy_(src), return_mode="median") / 1e6


def agrees(name: str, got: torch.Tensor, want: torch.Tensor, *, atol: float,
           rtol: float) -> bool:
    """True if got matches the reference want; else says by how much and that `name` is not
    timed (a benchmark never times a wrong kernel)."""
    if torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol):
        return True
    err = (got.float() - want.float()).abs().max().item()
    print(f"{name}: kernel differs from the reference by {err:.3g}; refusing to time it")
    return False

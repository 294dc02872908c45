"""Shared by the kernel benchmarks (kernels/*/bench_*.py): the device's measured memory ceiling
and matmul rate, the roofline they set, and the check a kernel passes before it is timed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

import torch


@contextlib.contextmanager
def flag_set(module: ModuleType, flag: str, value: bool) -> Iterator[None]:
    """module.flag = value inside the block, the old value back after it, raise or not: how a
    benchmark or bench/hopper_compile.py runs an opt-in GPU path (small_t.PDL, launch.COPY_LOGITS,
    grouped.SCALE_DOTS)."""
    old = getattr(module, flag)
    setattr(module, flag, value)
    try:
        yield
    finally:
        setattr(module, flag, old)


def copy_ceiling_gbs(device: str = "cuda", nbytes: int = 1 << 30) -> float:
    """The device's memory ceiling in GB/s: a 1 GiB device-to-device copy (read + write), median
    time. Benchmarks report a kernel's GB/s as a fraction of it."""
    from triton.testing import do_bench

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / do_bench(lambda: dst.copy_(src), return_mode="median") / 1e6


def matmul_peak_tflops(dtype: torch.dtype = torch.bfloat16, n: int = 8192,
                       device: str = "cuda") -> float:
    """The device's measured dense matmul rate in TFLOP/s: an n x n x n GEMM, median time.
    torch.float8_e4m3fn runs torch._scaled_mm (fp8 tensor cores, bf16 out)."""
    from triton.testing import do_bench

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    if dtype == torch.float8_e4m3fn:
        one = torch.ones((), device=device)

        def gemm():
            return torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    else:

        def gemm():
            return a @ b
    return 2 * n ** 3 / do_bench(gemm, return_mode="median") / 1e9


def roofline_ms(flops: float, nbytes: float, ceiling_gbs: float, peak_tflops: float) -> float:
    """The least time the work can take: its bytes at the copy ceiling or its FLOPs at the
    measured matmul rate, whichever is longer."""
    return max(nbytes / ceiling_gbs / 1e6, flops / peak_tflops / 1e9)


def agrees(name: str, got: torch.Tensor, want: torch.Tensor, *, atol: float,
           rtol: float) -> bool:
    """True if got matches the reference want; else says by how much and that `name` is not
    timed (a benchmark never times a wrong kernel)."""
    if torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol):
        return True
    err = (got.float() - want.float()).abs().max().item()
    print(f"{name}: kernel differs from the reference by {err:.3g}; refusing to time it")
    return False

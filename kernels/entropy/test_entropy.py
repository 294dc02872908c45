"""Softmax entropy: the torch reference by hand, then the Triton kernel against it on odd shapes.

Kernel cases run on CUDA, or on CPU under TRITON_INTERPRET=1 (set by the root conftest) in
fp32 / fp16; the bf16 case is `gpu` only. Outputs start poisoned (rio_kernels.testing).
"""

from __future__ import annotations

import math

import pytest
import torch

from rio_kernels.entropy import kernel
from rio_kernels.entropy.ref import softmax_entropy_max_ref, softmax_entropy_ref
from rio_kernels.testing import DEVICE, poisoned_outputs  # noqa: F401 (autouse)

NEG = float("-inf")


def test_ref_by_hand() -> None:
    z = torch.tensor([
        [0.0, 0.0, 0.0, 0.0],  # uniform over 4: log 4
        [1e4, 0.0, 0.0, 0.0],  # one-hot: 0
        [NEG, 3.0, 3.0, NEG],  # two equal, rest masked: log 2, p_max 1/2, first index
        [math.log(3.0), 0.0, NEG, NEG],  # p = (3/4, 1/4)
    ])
    h, p, a = softmax_entropy_max_ref(z)
    h34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(h, torch.tensor([math.log(4), 0.0, math.log(2), h34]))
    torch.testing.assert_close(p, torch.tensor([0.25, 1.0, 0.5, 0.75]))
    assert a.tolist() == [0, 0, 1, 0]
    assert torch.equal(softmax_entropy_ref(z), h)


def _rows(B: int, V: int, kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, V, generator=g) * 3  # [B, V]
    if kind == "extreme":
        z = z * 1e4
    elif kind == "one_huge":
        z[:, V // 2] = 3e4
    elif kind == "half_masked":
        z[:, ::2] = NEG
    elif kind == "one_left":
        z[:] = NEG
        z[:, V - 1] = 1.0
    elif kind == "ties":
        z[:] = 0.5
        z[:, V // 3] = z[:, 2 * V // 3] = 2.0
    elif kind == "flat":
        z[:] = 0.0
    return z


# (B, V, kind, dtype): one row, V below / at / past the block and chunk sizes, extremes, masks
CASES = [
    (1, 1, "randn", torch.float32),
    (1, 7, "randn", torch.float32),
    (3, 1024, "randn", torch.float32),
    (2, 1025, "randn", torch.float32),
    (5, 3001, "randn", torch.float16),
    (2, 16385, "randn", torch.float32),
    (3, 4099, "extreme", torch.float32),
    (2, 3001, "one_huge", torch.float32),
    (2, 3001, "half_masked", torch.float16),
    (2, 3001, "one_left", torch.float32),
    (2, 3001, "ties", torch.float32),
    (1, 3001, "flat", torch.float32),
]


@pytest.mark.parametrize("B, V, kind, dtype", CASES, ids=[f"{c[0]}x{c[1]}-{c[2]}" for c in CASES])
def test_kernel_matches_ref(B, V, kind, dtype) -> None:
    z = _rows(B, V, kind).to(dtype).to(DEVICE)
    h, p, a = kernel.softmax_entropy_max(z)
    rh, rp, ra = softmax_entropy_max_ref(z)
    assert h.dtype == p.dtype == torch.float32 and a.dtype == torch.int64 and h.shape == (B,)
    torch.testing.assert_close(h, rh, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(p, rp, atol=1e-6, rtol=1e-5)
    assert torch.equal(a, ra)
    torch.testing.assert_close(kernel.softmax_entropy(z), rh, atol=1e-4, rtol=1e-5)


def test_kernel_strided_rows() -> None:
    wide = _rows(3, 5000, "randn").to(DEVICE)
    z = wide[:, :4097]  # rows 5000 apart
    torch.testing.assert_close(kernel.softmax_entropy(z), softmax_entropy_ref(z), atol=1e-4,
                               rtol=1e-5)


def test_kernel_real_vocab() -> None:
    z = _rows(2, 248320, "randn").to(DEVICE)  # Qwen3.5 vocabulary: not a block multiple
    z[1, 100000:] = NEG
    h, p, a = kernel.softmax_entropy_max(z)
    rh, rp, ra = softmax_entropy_max_ref(z)
    # fp32 torch sums 248k terms with ~1e-5 relative error; the kernel is closer to fp64.
    exact = softmax_entropy_ref(z.double().cpu()).to(h)
    torch.testing.assert_close(h, rh, atol=3e-4, rtol=0)
    torch.testing.assert_close(h.cpu(), exact.cpu(), atol=3e-4, rtol=0)
    torch.testing.assert_close(p, rp, atol=1e-7, rtol=1e-4)
    assert torch.equal(a, ra)


@pytest.mark.gpu
def test_kernel_bf16_gpu() -> None:
    z = _rows(64, 248320, "randn").to("cuda", torch.bfloat16)
    z[:8, ::3] = NEG
    h, p, a = kernel.softmax_entropy_max(z)
    rh, rp, ra = softmax_entropy_max_ref(z)
    torch.testing.assert_close(h, rh, atol=3e-4, rtol=0)
    torch.testing.assert_close(p, rp, atol=1e-6, rtol=1e-4)
    assert torch.equal(a, ra)

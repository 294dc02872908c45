"""Soft embeddings: the torch references by hand, then the Triton kernels against them.

Kernel cases run on CUDA, or on CPU under TRITON_INTERPRET=1 (set by the root conftest) in
fp32 / fp16; the bf16 case is `gpu` only. Outputs (and split partials) start poisoned
(rio_kernels.testing).
"""

from __future__ import annotations

import pytest
import torch

from rio_kernels.soft_embed import kernel
from rio_kernels.soft_embed.ref import delimiter_blend_ref, soft_embed_ref, soft_embed_topk_ref
from rio_kernels.testing import BF16, DEVICE, FP32, TOL, poisoned_outputs  # noqa: F401 (autouse)


def _inputs(B: int, V: int, H: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(B, V, generator=g) * 2, dim=-1)  # [B, V] fp32
    weight = torch.randn(V, H, generator=g).to(dtype)  # [V, H]
    return probs.to(DEVICE), weight.to(DEVICE)


def test_refs_by_hand() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]])  # [V=3, H=2]
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    torch.testing.assert_close(soft_embed_ref(p, w), torch.tensor([[2.0, 3.0], [8.25, 16.0]]))
    ids = torch.tensor([[1, 2], [0, -1]])
    vals = torch.tensor([[0.5, 0.5], [1.0, 0.9]])  # the -1 slot's 0.9 must be ignored
    torch.testing.assert_close(soft_embed_topk_ref(vals, ids, w),
                               torch.tensor([[6.5, 12.0], [1.0, 2.0]]))
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    out = delimiter_blend_ref(x, w, torch.tensor([2, -1]), torch.tensor([0.9, 0.1]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0], [5.0, 5.0]]))


# (B, V, H, weight dtype): one row, odd V / H, B past the 16-row tile, V past one split
DENSE = [
    (1, 7, 5, torch.float32),
    (3, 3001, 96, torch.float32),
    (17, 1000, 130, torch.float32),
    (2, 8193, 64, torch.float32),
    (4, 3001, 64, torch.float16),
]


@pytest.mark.parametrize("B, V, H, dtype", DENSE, ids=[f"{c[0]}x{c[1]}x{c[2]}" for c in DENSE])
def test_dense_matches_ref(B, V, H, dtype) -> None:
    probs, weight = _inputs(B, V, H, dtype)
    out = kernel.soft_embed(probs, weight)
    assert out.dtype == dtype and out.shape == (B, H)
    torch.testing.assert_close(out, soft_embed_ref(probs, weight), **TOL[dtype])


@pytest.mark.parametrize("V", [7, 3001])
def test_one_hot_is_an_embedding_lookup(V) -> None:
    _, weight = _inputs(3, V, 40, torch.float32)
    ids = torch.tensor([0, V - 1, V // 2], device=DEVICE)
    one_hot = torch.nn.functional.one_hot(ids, V).float()  # [3, V]
    assert torch.equal(kernel.soft_embed(one_hot, weight), weight[ids])
    ones = torch.ones(3, 1, device=DEVICE)
    assert torch.equal(kernel.soft_embed_topk(ones, ids[:, None], weight), weight[ids])


# (B, V, K, H, weight dtype); K = V is the full mixture
TOPK = [
    (1, 7, 7, 5, torch.float32),
    (3, 1001, 1001, 72, torch.float32),
    (5, 3001, 20, 64, torch.float32),
    (2, 1000, 65, 130, torch.float16),
]


@pytest.mark.parametrize("B, V, K, H, dtype", TOPK, ids=[f"{c[0]}x{c[1]}k{c[2]}" for c in TOPK])
def test_topk_matches_ref(B, V, K, H, dtype) -> None:
    probs, weight = _inputs(B, V, H, dtype)
    vals, ids = torch.topk(probs, K, dim=-1)  # [B, K]
    ids[0, K // 2:] = -1  # empty slots are skipped
    out = kernel.soft_embed_topk(vals, ids, weight)
    torch.testing.assert_close(out, soft_embed_topk_ref(vals, ids, weight), **TOL[dtype])


def test_topk_with_k_equal_v_is_the_dense_mixture() -> None:
    probs, weight = _inputs(3, 2049, 96, torch.float32)
    vals, ids = torch.topk(probs, 2049, dim=-1)
    dense = kernel.soft_embed(probs, weight)
    torch.testing.assert_close(kernel.soft_embed_topk(vals, ids, weight), dense, **TOL[FP32])
    torch.testing.assert_close(dense, probs @ weight, **TOL[FP32])


# (B, H, dtype)
BLEND = [(1, 5, torch.float32), (6, 130, torch.float32), (4, 64, torch.float16)]


@pytest.mark.parametrize("B, H, dtype", BLEND, ids=[f"{c[0]}x{c[1]}" for c in BLEND])
def test_blend_matches_ref(B, H, dtype) -> None:
    V = 300
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(V, H, generator=g).to(dtype).to(DEVICE)
    x = torch.randn(B, H, generator=g).to(dtype).to(DEVICE)
    ids = torch.randint(0, V, (B,), generator=g).to(DEVICE)
    ids[0] = -1  # keep x
    a = torch.rand(B, generator=g).to(DEVICE)
    out = kernel.delimiter_blend(x, weight, ids, a)
    assert out.dtype == dtype
    torch.testing.assert_close(out, delimiter_blend_ref(x, weight, ids, a), atol=1e-3, rtol=1e-3)
    assert torch.equal(out[0], x[0])
    one = kernel.delimiter_blend(x, weight, ids, torch.ones(B, device=DEVICE))
    zero = kernel.delimiter_blend(x, weight, ids, torch.zeros(B, device=DEVICE))
    assert torch.equal(one, x) and torch.equal(zero[1:], weight[ids[1:]])


@pytest.mark.gpu
def test_bf16_gpu() -> None:
    probs, weight = _inputs(32, 248320, 256, torch.bfloat16)
    ref = soft_embed_ref(probs, weight).float()
    torch.testing.assert_close(kernel.soft_embed(probs, weight).float(), ref, **TOL[BF16])
    vals, ids = torch.topk(probs, 64, dim=-1)
    torch.testing.assert_close(kernel.soft_embed_topk(vals, ids, weight).float(),
                               soft_embed_topk_ref(vals, ids, weight).float(), **TOL[BF16])
    one_hot = torch.nn.functional.one_hot(ids[:, 0], 248320).float()
    assert torch.equal(kernel.soft_embed(one_hot, weight), weight[ids[:, 0]])

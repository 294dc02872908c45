"""small_t.PDL (programmatic dependent launch of the down kernel): off the GPU the flag changes
nothing; on a GPU the small-T path with it on gives the same bits as with it off (the first K
step is peeled before the wait, the accumulation order is unchanged), eager and in a CUDA graph,
bf16 and e4m3 weights."""

from __future__ import annotations

import pytest
import torch

from rio_kernels.fused_moe import fp8, fused_moe, fused_moe_ref, small_t
from rio_kernels.testing import BF16, DEVICE, FP16, poisoned_outputs  # noqa: F401 (autouse)
from rio_kernels.testing import TOL_TWO_GEMMS as TOL

FP8_BLOCK = (128, 128)


def inputs(T: int, H: int, I: int, E: int, topk: int, dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    w13 = (torch.randn(E, 2 * I, H, generator=g) / H ** 0.5).to(dtype)
    w2 = (torch.randn(E, H, I, generator=g) / I ** 0.5).to(dtype)
    weights = torch.softmax(torch.randn(T, topk, generator=g), -1)
    ids = torch.randn(T, E, generator=g).topk(topk, -1).indices.int()
    return (t.to(device) for t in (x, w13, w2, weights, ids))


def run(pdl: bool, monkeypatch, *args, **kw) -> torch.Tensor:
    monkeypatch.setattr(small_t, "PDL", pdl)
    return fused_moe(*args, small_t=True, **kw)


@pytest.mark.parametrize("T, I", [(1, 16), (3, 40)])  # one K step; several, I not a multiple
def test_pdl_flag_changes_nothing_off_gpu(monkeypatch, T, I):
    x, w13, w2, weights, ids = inputs(T, 32, I, 8, 2, FP16, DEVICE)
    on = run(True, monkeypatch, x, w13, w2, weights, ids)
    off = run(False, monkeypatch, x, w13, w2, weights, ids)
    assert torch.equal(on, off)
    torch.testing.assert_close(on.float(), fused_moe_ref(x, w13, w2, weights, ids).float(),
                               **TOL[FP16])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("T, I, weights_kind", [
    (1, 128, "bf16"), (8, 128, "bf16"), (1, 1024, "bf16"), (1, 128, "fp8"), (32, 128, "fp8")])
def test_pdl_same_bits_on_gpu(monkeypatch, T, I, weights_kind):
    x, w13, w2, weights, ids = inputs(T, 512, I, 64, 10, BF16, "cuda")
    kw = {}
    if weights_kind == "fp8":
        (w13, s13), (w2, s2) = fp8.quantize_block(w13, FP8_BLOCK), fp8.quantize_block(w2, FP8_BLOCK)
        kw = {"w13_scale": s13, "w2_scale": s2, "block_shape": FP8_BLOCK}
    off = run(False, monkeypatch, x, w13, w2, weights, ids, **kw)
    on = run(True, monkeypatch, x, w13, w2, weights, ids, **kw)
    assert torch.equal(on, off)
    graph, out = torch.cuda.CUDAGraph(), None
    run(True, monkeypatch, x, w13, w2, weights, ids, **kw)  # compiled before capture
    with torch.cuda.graph(graph):
        out = run(True, monkeypatch, x, w13, w2, weights, ids, **kw)
    for _ in range(3):
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, off)
    torch.testing.assert_close(off.float(), fused_moe_ref(x, w13, w2, weights, ids, **kw).float(),
                               atol=3e-2, rtol=3e-2)

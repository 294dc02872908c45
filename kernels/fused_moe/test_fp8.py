"""FP8 expert weights: the quantize / dequantize helpers by hand, and fused_moe on e4m3 weights
against its dequantizing fp32 reference (CPU: fp16 activations under the Triton interpreter)."""

from dataclasses import dataclass

import pytest
import torch

from rio_kernels.fused_moe import ep_expert_map, fp8, fused_moe, fused_moe_ref, grouped, route_topk
from rio_kernels.fused_moe.configs import MoeConfig
from rio_kernels.fused_moe.scales import weight_scales
from rio_kernels.testing import poisoned_outputs  # noqa: F401 (autouse)


def test_block_scales_by_hand():
    # One 2 x 2 block holds amax 448 * 2: scale 2; the other amax 448 / 4: scale 0.25.
    w = torch.tensor([[896.0, -1.0, 112.0, 0.0], [2.0, 4.0, 0.0, -56.0]])
    q, scale = fp8.quantize_block(w, (2, 2))
    assert scale.shape == (1, 2)
    torch.testing.assert_close(scale, torch.tensor([[2.0, 0.25]]))
    assert q.dtype == fp8.FP8
    torch.testing.assert_close(q.float(), torch.tensor([[448.0, -0.5, 448.0, 0.0],
                                                        [1.0, 2.0, 0.0, -224.0]]))
    torch.testing.assert_close(fp8.dequantize(q, scale, (2, 2)), w)


def test_channel_scales_by_hand():
    w = torch.tensor([[448.0, -224.0], [0.5, 1.0]])
    q, scale = fp8.quantize_channel(w)
    torch.testing.assert_close(scale, torch.tensor([1.0, 1.0 / 448.0]))
    torch.testing.assert_close(fp8.dequantize(q, scale, None), w)


@pytest.mark.parametrize("shape,block", [((3, 40, 70), (16, 32)), ((2, 8, 8), (128, 128)),
                                         ((5, 33, 17), None)])
def test_roundtrip_error_and_scale_shape(shape, block):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if block is None:
        q, scale = fp8.quantize_channel(w)
    else:
        q, scale = fp8.quantize_block(w, block)
    assert tuple(scale.shape) == fp8.scale_shape(tuple(w.shape), block)
    err = (fp8.dequantize(q, scale, block) - w).abs() / w.abs().amax()
    assert err.max() < 2 ** -4  # e4m3 keeps 3 mantissa bits: relative step 2^-3, half of it


@dataclass(frozen=True)
class Fp8Case:
    name: str
    T: int
    H: int = 32
    I: int = 16
    E: int = 4
    topk: int = 2
    block: tuple[int, int] | None = (16, 16)
    routing: str = "random"
    ep_size: int = 1


FP8_CASES = [
    Fp8Case("one token", T=1),
    Fp8Case("one token channel", T=1, block=None),
    Fp8Case("7 tokens", T=7),
    Fp8Case("7 tokens channel", T=7, block=None),
    Fp8Case("bk below BLOCK_K, H not a bk multiple", T=5, H=40, block=(16, 8)),
    Fp8Case("bn 32 over I=16: gate and up in one row block", T=3, block=(32, 16)),
    Fp8Case("bn 8: grouped path dequantizes first", T=6, block=(8, 16)),
    Fp8Case("bk 32 = BLOCK_K: the grouped path may scale its dots", T=6, H=64, block=(16, 32)),
    Fp8Case("experts with no tokens", T=9, E=16, routing="few_experts"),
    Fp8Case("every token on one expert", T=21, E=8, routing="one_expert"),
    Fp8Case("512 experts top-10", T=2, E=512, topk=10),
    Fp8Case("EP map, rank 1 of 4", T=8, E=16, topk=4, ep_size=4),
    Fp8Case("EP map channel", T=8, E=16, topk=4, ep_size=4, block=None),
]
PATHS = {"small": True, "grouped": False}


def quantized_inputs(case: Fp8Case, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case.T, case.H, generator=g).half()  # [T, H]
    w13 = torch.randn(case.E, 2 * case.I, case.H, generator=g) * case.H**-0.5  # [E, 2I, H]
    w2 = torch.randn(case.E, case.H, case.I, generator=g) * case.I**-0.5  # [E, H, I]
    logits = torch.randn(case.T, case.E, generator=g)  # [T, E]
    if case.routing == "few_experts":
        logits[:, [1, case.E - 1]] += 20.0
    if case.routing == "one_expert":
        logits[:, 3] += 20.0
    weights, ids = route_topk(logits, case.topk)  # [T, topk], [T, topk]
    return x, w13, w2, weights, ids


def quantize(w, block):
    return fp8.quantize_block(w, block) if block else fp8.quantize_channel(w)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", FP8_CASES, ids=lambda c: c.name)
def test_fp8_kernels_match_dequantized_ref(case: Fp8Case, path: str):
    x, w13, w2, weights, ids = quantized_inputs(case)
    emap = None
    if case.ep_size > 1:
        emap = ep_expert_map(case.E, 1, case.ep_size)
        local = slice(case.E // case.ep_size, 2 * case.E // case.ep_size)
        w13, w2 = w13[local], w2[local]
    (q13, s13), (q2, s2) = quantize(w13, case.block), quantize(w2, case.block)
    kw = {"w13_scale": s13, "w2_scale": s2, "block_shape": case.block, "expert_map": emap}
    out = fused_moe(x, q13, q2, weights, ids, small_t=PATHS[path], **kw)
    ref = fused_moe_ref(x, q13, q2, weights, ids, **kw)
    assert out.dtype == x.dtype
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("block", [(16, 16), None])
def test_fp8_tensor_parallel_shards_sum_to_full(block, path):
    # Quantize the full experts, then shard gate and up rows on I (block scales: gate blocks,
    # then up blocks), as a TP loader does: the shards' outputs sum to the full MoE.
    T, H, I, E, topk, tp = 5, 32, 32, 4, 2, 2
    case = Fp8Case("tp", T=T, H=H, I=I, E=E, topk=topk, block=block)
    x, w13, w2, weights, ids = quantized_inputs(case)
    (q13, s13), (q2, s2) = quantize(w13, block), quantize(w2, block)
    rb = block[0] if block else 1  # rows per scale row
    total = torch.zeros(T, H)
    for r in range(tp):
        rows = slice(r * I // tp, (r + 1) * I // tp)
        srows = slice(rows.start // rb, rows.stop // rb)
        up_s = slice(I // rb + srows.start, I // rb + srows.stop)
        q13_r = torch.cat([q13[:, rows], q13[:, I + rows.start:I + rows.stop]], dim=1)
        s13_r = torch.cat([s13[:, srows], s13[:, up_s]], dim=1)
        q2_r = q2[:, :, rows]
        s2_r = s2[:, :, srows] if block else s2
        total += fused_moe(x, q13_r, q2_r, weights, ids, w13_scale=s13_r, w2_scale=s2_r,
                           block_shape=block, small_t=PATHS[path]).float()
    ref = fused_moe_ref(x, q13, q2, weights, ids, w13_scale=s13, w2_scale=s2, block_shape=block)
    torch.testing.assert_close(total, ref.float(), atol=2e-2, rtol=2e-2)


def test_fp8_scale_shape_is_checked():
    case = Fp8Case("bad", T=2)
    x, w13, w2, weights, ids = quantized_inputs(case)
    (q13, s13), (q2, s2) = quantize(w13, (16, 16)), quantize(w2, (16, 16))
    with pytest.raises(ValueError, match="scale"):
        fused_moe(x, q13, q2, weights, ids, w13_scale=s13[:, :1], w2_scale=s2, block_shape=(16, 16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("block", [(128, 128), None])
@pytest.mark.parametrize("T", [1, 64])
def test_fp8_bf16_on_gpu(T, block, path):
    # e4m3 weights with bf16 activations (the interpreter runs fp16 only) at Rio-like shapes.
    case = Fp8Case("gpu", T=T, H=256, I=128, E=512, topk=10, block=block)
    x, w13, w2, weights, ids = (t.cuda() for t in quantized_inputs(case))
    (q13, s13), (q2, s2) = quantize(w13, block), quantize(w2, block)
    kw = {"w13_scale": s13, "w2_scale": s2, "block_shape": block}
    out = fused_moe(x.bfloat16(), q13, q2, weights, ids, small_t=PATHS[path], **kw)
    ref = fused_moe_ref(x.bfloat16(), q13, q2, weights, ids, **kw)
    torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("block", [(16, 16), None])
def test_fused_moe_fp8_weights_match_dequantized_ref(block):
    g = torch.Generator().manual_seed(1)
    T, H, I, E, topk = 5, 32, 16, 4, 2
    x = torch.randn(T, H, generator=g).half()
    w13 = torch.randn(E, 2 * I, H, generator=g) * 0.2
    w2 = torch.randn(E, H, I, generator=g) * 0.2
    quant = (lambda w: fp8.quantize_block(w, block)) if block else fp8.quantize_channel
    (q13, s13), (q2, s2) = quant(w13), quant(w2)
    weights = torch.softmax(torch.randn(T, topk, generator=g), -1)
    ids = torch.randint(0, E, (T, topk), generator=g)
    scales = {"w13_scale": s13, "w2_scale": s2, "block_shape": block}
    out = fused_moe(x, q13, q2, weights, ids, **scales)
    ref = fused_moe_ref(x, q13, q2, weights, ids, **scales)
    assert out.dtype == x.dtype
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    # The reference really dequantizes: it differs from the unquantized weights' result.
    plain = fused_moe_ref(x, w13.half(), w2.half(), weights, ids)
    assert not torch.equal(plain, ref)


@pytest.mark.parametrize("scale_dots", [False, True])
def test_grouped_block_scale_placements_match_ref(monkeypatch, scale_dots: bool):
    """Both w8a16 block-scale placements of the grouped path (grouped.SCALE_DOTS: on the weight
    tiles' K rows, or on each K step's dot where BLOCK_K fits in a block) equal the reference."""
    monkeypatch.setattr(grouped, "SCALE_DOTS", scale_dots)
    case = next(c for c in FP8_CASES if c.name.startswith("bk 32 = BLOCK_K"))
    x, w13, w2, weights, ids = quantized_inputs(case)
    (q13, s13), (q2, s2) = quantize(w13, case.block), quantize(w2, case.block)
    kw = {"w13_scale": s13, "w2_scale": s2, "block_shape": case.block}
    assert bool(grouped.scale_dot(weight_scales(q13, s13, case.block), 32, False)) is scale_dots
    out = fused_moe(x, q13, q2, weights, ids, small_t=False, config=MoeConfig(block_k=32), **kw)
    ref = fused_moe_ref(x, q13, q2, weights, ids, **kw)
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("path, fn", [("small", "small_t_moe"), ("grouped", "grouped_moe")])
def test_an_unwritten_output_row_fails(monkeypatch, path: str, fn: str):
    """fused_moe's own output comes from buffers.empty, poisoned here: a path that leaves a row
    of it unwritten (planted: the real kernels write a scratch, row 0 is not copied) fails the
    comparison above, and the same call unplanted passes it."""
    from rio_kernels import buffers
    from rio_kernels.fused_moe import kernel

    case = next(c for c in FP8_CASES if c.name == "7 tokens")
    x, w13, w2, weights, ids = quantized_inputs(case)
    (q13, s13), (q2, s2) = quantize(w13, case.block), quantize(w2, case.block)
    kw = {"w13_scale": s13, "w2_scale": s2, "block_shape": case.block}
    ref = fused_moe_ref(x, q13, q2, weights, ids, **kw).float()
    module = kernel._small if path == "small" else kernel._grouped
    real = getattr(module, fn)

    def skips_row_0(*args):
        *inputs, out = args[:9]
        scratch = buffers.empty(tuple(out.shape), out.dtype, out.device)
        real(*inputs, scratch, *args[9:])
        out[1:] = scratch[1:]
        return out

    torch.testing.assert_close(fused_moe(x, q13, q2, weights, ids, small_t=PATHS[path], **kw)
                               .float(), ref, atol=1e-2, rtol=1e-2)
    monkeypatch.setattr(module, fn, skips_row_0)
    out = fused_moe(x, q13, q2, weights, ids, small_t=PATHS[path], **kw)
    assert out[0].isnan().all() and not out[1:].isnan().any()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)

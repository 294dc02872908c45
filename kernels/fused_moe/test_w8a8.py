"""W8a8 prefill (act_quant=True): the per-token-group quantizer (kernel against fp8.quantize_act,
bytes equal), the reference by hand, and the grouped path against its dequantizing reference.

The Triton 3.8 interpreter runs e4m3 x e4m3 dots (it widens e4m3 to fp16, which is exact, and
sums in fp32), so the w8a8 kernels themselves run here on CPU, with fp16 activations; only its
fp32 -> e4m3 cast is wrong, which act_quant.py rounds around (see its docstring).
The w8a8 path is grouped.py's kernels with ACT_SCALE; fused_moe(act_quant=True) takes it.
"""

from dataclasses import dataclass

import pytest
import torch

from rio_kernels.fused_moe import (
    act_quant,
    ep_expert_map,
    fp8,
    fused_moe,
    fused_moe_ref,
    route_topk,
)
from rio_kernels.fused_moe.configs import GPU_CONFIGS
from rio_kernels.fused_moe.ref import W8A8_TO_A8, w8a8_errors
from rio_kernels.fused_moe.test_fp8 import Fp8Case, quantize, quantized_inputs
from rio_kernels.testing import poisoned_outputs  # noqa: F401 (autouse)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_quantize_act_by_hand():
    # Row 0, groups of 2: amax 896 -> scale 2, amax 0.25 -> scale 0.25 / 448 (0.25 -> 448).
    # Row 1: amax 3.1 -> scale 3.1 / 448; 1.0 / scale = 144.52 rounds to 144 (e4m3 steps of 16
    # in [128, 256)), so 1.0 comes back as 144 * 3.1 / 448 = 0.99643.
    x = torch.tensor([[896.0, -2.0, 0.25, 0.0], [1.0, 3.1, 0.0, 0.0]])
    q, scale = fp8.quantize_act(x, 2)
    torch.testing.assert_close(scale, torch.tensor([[2.0, 0.25 / 448], [3.1 / 448, 1e-12]]))
    torch.testing.assert_close(q.float(), torch.tensor([[448.0, -1.0, 448.0, 0.0],
                                                        [144.0, 448.0, 0.0, 0.0]]))
    back = fp8.act_round_trip(x, 2)
    torch.testing.assert_close(back[1, :2], torch.tensor([144 * 3.1 / 448, 3.1]))


# (rows, K, group, dtype, row magnitudes): groups that split K, that do not divide it, one per
# row (group = K); rows from 1e-4 to 1e3, and a zero row (scale 1e-12, q 0).
QUANT_CASES = [
    (5, 64, 16, torch.float16, (1e-4, 1e3)),
    (3, 40, 32, torch.float32, (1e-2, 1e2)),
    (7, 48, 48, torch.float32, (1.0, 1.0)),
    (1, 512, 128, torch.float16, (3.0, 3.0)),
    (33, 32, 32, torch.float32, (1e-6, 1e4)),
]


@pytest.mark.parametrize("R, K, group, dtype, mags", QUANT_CASES)
def test_quantize_act_kernel_equals_reference(R, K, group, dtype, mags):
    g = torch.Generator().manual_seed(R * K)
    x = torch.randn(R, K, generator=g) * torch.logspace(*torch.tensor(mags).log10(), R)[:, None]
    x = x.to(dtype)
    x[R // 2] = 0.0
    q, scale = act_quant.quantize_act(x.to(DEVICE), group)
    q_ref, scale_ref = fp8.quantize_act(x, group)
    assert q.dtype == fp8.FP8 and scale.shape == (R, -(-K // group))
    assert torch.equal(scale.cpu(), scale_ref)
    assert torch.equal(q.cpu().float(), q_ref.float())  # every e4m3 value, ties and 448 included


def test_quantize_act_skips_rows_of_no_local_expert():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)).half().to(DEVICE)
    q = torch.full((4, 64), 7.0, device=DEVICE).to(fp8.FP8)  # sentinel: unwritten rows keep it
    scale = torch.full((4, 2), -1.0, device=DEVICE)
    row_expert = torch.tensor([0, -1, 3, -1], dtype=torch.int32, device=DEVICE)
    act_quant.quantize_act(x, 32, q, scale, row_expert)
    q_ref, scale_ref = fp8.quantize_act(x.cpu(), 32)
    for r, written in enumerate([True, False, True, False]):
        want_q = q_ref[r].float() if written else torch.full((64,), 7.0)
        assert torch.equal(q[r].cpu().float(), want_q), r
        assert torch.equal(scale[r].cpu(), scale_ref[r] if written else torch.full((2,), -1.0))


def test_ref_w8a8_by_hand():
    # One expert, H=2, I=1, channel scales 1: gate [1, 0], up [0, 1], down [1, 0.5]. x = [1, 3.1]
    # comes back as [0.99643, 3.1] (see the quantizer's test): h = silu(0.99643) * 3.1 = 2.25602
    # (2.26628 unquantized); h, one per row, quantizes exactly (448 * scale).
    x = torch.tensor([[1.0, 3.1]])
    q13 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]).to(fp8.FP8)
    q2 = torch.tensor([[[1.0], [0.5]]]).to(fp8.FP8)
    kw = {"w13_scale": torch.ones(1, 2), "w2_scale": torch.ones(1, 2), "block_shape": None}
    args = (x, q13, q2, torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.int32))
    torch.testing.assert_close(fused_moe_ref(*args, act_quant=True, **kw),
                               torch.tensor([[2.25602, 1.12801]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_moe_ref(*args, **kw), torch.tensor([[2.26628, 1.13314]]),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="FP8"):
        fused_moe_ref(x, q13.float(), q2.float(), *args[3:], act_quant=True)


W8A8_CASES = [
    Fp8Case("one token", T=1, H=64, I=32, block=(32, 32)),
    Fp8Case("one token channel", T=1, H=64, I=32, block=None),
    Fp8Case("7 tokens channel", T=7, H=64, I=32, block=None),
    Fp8Case("H not a group multiple, bn 16", T=5, H=72, I=32, block=(16, 32)),
    Fp8Case("64-wide groups, I below one group", T=6, H=128, block=(16, 64)),
    Fp8Case("33 tokens, several blocks per expert", T=33, H=64, I=32, block=(32, 32)),
    Fp8Case("experts with no tokens", T=9, H=64, E=16, block=(16, 32), routing="few_experts"),
    Fp8Case("every token on one expert", T=21, H=64, E=8, block=None, routing="one_expert"),
    Fp8Case("512 experts top-10", T=2, H=64, I=32, E=512, topk=10, block=(32, 32)),
    Fp8Case("EP map, rank 1 of 4", T=8, H=64, I=32, E=16, topk=4, ep_size=4, block=(32, 32)),
    Fp8Case("EP map channel", T=8, H=64, I=32, E=16, topk=4, ep_size=4, block=None),
]


def w8a8_inputs(case: Fp8Case, device="cpu"):
    """((x, q13, q2, weights, ids), fused_moe's keyword arguments) on device; EP: rank 1."""
    x, w13, w2, weights, ids = quantized_inputs(case)
    emap = ep_expert_map(case.E, 1, case.ep_size) if case.ep_size > 1 else None
    mine = slice(None) if emap is None else emap >= 0  # this rank's experts
    (q13, s13), (q2, s2) = (quantize(w[mine], case.block) for w in (w13, w2))
    to = {"device": device}
    kw = {"w13_scale": s13.to(**to), "w2_scale": s2.to(**to), "block_shape": case.block,
          "expert_map": None if emap is None else emap.to(**to)}
    return tuple(t.to(**to) for t in (x, q13, q2, weights, ids)), kw


@pytest.mark.parametrize("case", W8A8_CASES, ids=lambda c: c.name)
def test_w8a8_matches_dequantizing_ref(case: Fp8Case):
    args, kw = w8a8_inputs(case)
    out = fused_moe(*args, small_t=False, act_quant=True, **kw)
    ref = fused_moe_ref(*args, act_quant=True, **kw)
    assert out.dtype == args[0].dtype
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("block", [(32, 32), None])
def test_w8a8_quantizes_activations(block):
    # The kernel sits far closer to the w8a8 reference than w8a8 sits to w8a16.
    args, kw = w8a8_inputs(Fp8Case("quantized", T=9, H=64, I=32, block=block))
    out = fused_moe(*args, small_t=False, act_quant=True, **kw).float()
    ref_a8 = fused_moe_ref(*args, act_quant=True, **kw).float()
    ref_a16 = fused_moe_ref(*args, **kw).float()
    assert (out - ref_a8).abs().max() < 0.25 * (ref_a16 - ref_a8).abs().max()


def test_w8a8_prefill_tiles_at_i128():
    # The GPU's prefill tiles (BLOCK_M 64, BLOCK_N 128; w8a8 BLOCK_K 128) at TP 8's I=128: the
    # down GEMM is one K step over one activation group and one weight block per tile.
    args, kw = w8a8_inputs(Fp8Case("prefill", T=16, H=256, I=128, E=8, topk=4, block=(128, 128)))
    out = fused_moe(*args, small_t=False, act_quant=True, config=GPU_CONFIGS[-1][1], **kw)
    ref = fused_moe_ref(*args, act_quant=True, **kw)
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-2, rtol=1e-2)
    assert w8a8_errors(out, ref, fused_moe_ref(*args, **kw))["ok"]


def test_w8a8_errors_by_hand():
    # In units of |a8 - a16|: the exact w8a8 result is 1 from a16; staying at a16 (activations
    # not quantized) is 1 from a8; half-way past a8 is too far from both.
    a16, a8 = torch.zeros(2, 3), torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # |a8-a16| 5
    assert w8a8_errors(a8, a8, a16) == {"to_a16": 1.0, "to_a8": 0.0, "ok": True}
    assert w8a8_errors(a16, a8, a16) == {"to_a16": 0.0, "to_a8": 1.0, "ok": False}
    near = a8 + torch.tensor([[0.0, 0.0, 5.0 * W8A8_TO_A8 * 0.9], [0.0, 0.0, 0.0]])  # sideways
    assert w8a8_errors(near, a8, a16)["ok"]
    assert not w8a8_errors(1.5 * a8, a8, a16)["ok"]


@dataclass(frozen=True)
class Dispatch:
    name: str
    small_t: bool
    block: tuple[int, int] | None
    w8a8: bool  # the w8a8 path runs (else w8a16: activations stay fp16 / bf16)


DISPATCH = [
    Dispatch("grouped, 32-wide groups: w8a8", False, (32, 32), True),
    Dispatch("grouped, channel scales: w8a8", False, None, True),
    Dispatch("small-T path stays w8a16", True, (32, 32), False),
    Dispatch("16-wide groups (below one fp8 MMA) stay w8a16", False, (16, 16), False),
]


@pytest.mark.parametrize("d", DISPATCH, ids=lambda d: d.name)
def test_act_quant_dispatch(monkeypatch, d: Dispatch):
    taken = []  # spied on, still run
    run = act_quant.quantize_act
    monkeypatch.setattr(act_quant, "quantize_act", lambda *a: taken.append(1) or run(*a))
    args, kw = w8a8_inputs(Fp8Case("dispatch", T=5, H=64, I=32, block=d.block))
    out = fused_moe(*args, small_t=d.small_t, act_quant=True, **kw)
    assert len(taken) == (2 if d.w8a8 else 0)  # x, then h
    ref = fused_moe_ref(*args, act_quant=d.w8a8, **kw)
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-2, rtol=1e-2)


def test_act_quant_needs_fp8_weights():
    x, w13, w2, weights, ids = quantized_inputs(Fp8Case("bf16", T=3))
    with pytest.raises(ValueError, match="FP8"):
        fused_moe(x, w13.half(), w2.half(), weights, ids, act_quant=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("block", [(128, 128), None])
@pytest.mark.parametrize("T", [64, 300])
def test_w8a8_bf16_on_gpu(T, block):
    # e4m3 x e4m3 tensor-core dots with bf16 activations at Rio-like shapes (TP 8's I=128).
    case = Fp8Case("gpu", T=T, H=256, I=128, E=512, topk=10, block=block)
    args, kw = w8a8_inputs(case, "cuda")
    x = args[0].bfloat16()
    out = fused_moe(x, *args[1:], small_t=False, act_quant=True, **kw)
    ref = fused_moe_ref(x, *args[1:], act_quant=True, **kw)
    torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_w8a8_prefill_tp8_on_gpu():
    # TP 8's I=128 at T=4096 over 512 experts takes the bench's prefill tiles (BLOCK_K = I: one K
    # step in the down GEMM). The quantizer's bytes equal the reference's (torch on CUDA divides
    # by a Python number through its reciprocal: fp8._div_max). The result is checked normwise:
    # Hopper's fast fp8 accumulation re-rounds some of h to a neighbouring e4m3 value (ref.py).
    g = torch.Generator(device="cuda").manual_seed(0)
    T, E, H, I, block = 4096, 512, 1024, 128, (128, 128)
    x = torch.randn(T, H, device="cuda", generator=g).bfloat16()
    q13, s13 = fp8.quantize_block(torch.randn(E, 2 * I, H, device="cuda", generator=g) * H**-0.5,
                                  block)
    q2, s2 = fp8.quantize_block(torch.randn(E, H, I, device="cuda", generator=g) * I**-0.5, block)
    weights, ids = route_topk(torch.randn(T, E, device="cuda", generator=g), 10)
    q, scale = act_quant.quantize_act(x, 128)
    q_ref, scale_ref = fp8.quantize_act(x, 128)
    assert torch.equal(scale, scale_ref) and torch.equal(q.float(), q_ref.float())
    kw = {"w13_scale": s13, "w2_scale": s2, "block_shape": block}
    args = (x, q13, q2, weights, ids)
    out = fused_moe(*args, small_t=False, act_quant=True, **kw)
    errs = w8a8_errors(out, fused_moe_ref(*args, act_quant=True, **kw), fused_moe_ref(*args, **kw))
    assert errs["ok"], errs

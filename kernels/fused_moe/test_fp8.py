"""FP8 expert weights: the quantize / dequantize helpers by hand, and fused_moe on e4m3 weights
against its dequantizing fp32 reference (CPU: fp16 activations under the Triton interpreter)."""

import pytest
import torch

from rio_kernels.fused_moe import fp8, fused_moe, fused_moe_ref


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

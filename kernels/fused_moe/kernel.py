"""Triton routed-expert MoE, bf16/fp16 or FP8 (e4m3) weights: picks the small-T path
(small_t.py) or the grouped path (grouped.py). Called by the MoE layer; checked against ref.py.
"""

from __future__ import annotations

import math as _math

import torch

from .. import buffers as _buffers
from . import act_quant as _aq
from . import fp8 as _fp8
from . import grouped as _grouped
from . import scales as _scales
from . import small_t as _small
from .configs import MoeConfig, pick_config


def fused_moe(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    expert_map: torch.Tensor | None = None,
    config: MoeConfig | None = None,
    out: torch.Tensor | None = None,
    w13_scale: torch.Tensor | None = None,
    w2_scale: torch.Tensor | None = None,
    block_shape: tuple[int, int] | None = None,
    small_t: bool | None = None,
    act_quant: bool = False,
) -> torch.Tensor:
    """out[t] = sum_k w[t, k] * W2[e] @ (silu(W1g[e] @ x[t]) * (W1u[e] @ x[t])), e = topk_ids[t, k].

    x: [T, H] fp16/bf16/fp32; w13: [E, 2I, H] (gate rows, then up rows); w2: [E, H, I];
    topk_weights: [T, topk] (fp32); topk_ids: [T, topk] int global ids. Returns [T, H] x.dtype.
    Tensor parallel: pass the I-shard (w13 [E, 2I/tp, H], w2 [E, H, I/tp]); the caller sums.
    Expert parallel: pass the local experts and expert_map [E_global] (global -> local or -1,
    see routing.ep_expert_map); non-local slots and negative ids contribute 0.
    config: grouped-path tiles (default pick_config); out: optional [T, H] x.dtype buffer.
    Weights: x.dtype, or FP8 experts: w13 / w2 in e4m3 with w13_scale / w2_scale as in fp8.py
    (block_shape (bn, bk) for block scales [E, ceil(N/bn), ceil(K/bk)], None for per-channel
    scales [E, N]); the kernels read the e4m3 bytes and compute with x.dtype activations (w8a16).
    small_t: force (True) or forbid (False) the small-T path; None: T * topk <=
    small_t.max_pairs(I, weight bytes) (justified in small_t.py; w8a8 counts as 2 bytes).
    act_quant: FP8 experts only, opt-in: the grouped path quantizes activations to e4m3 per
    token group (act_quant.py) and runs e4m3 x e4m3 tensor-core GEMMs (w8a8) where the weight
    block's K width is >= act_quant.MIN_BLOCK_K (channel scales: always); small-T stays w8a16.
    Paths: small-T (small_t.py: gate-up GEMV per pair, down + top-k combine per token, two
    launches) or grouped (grouped.py: align pairs by expert, gate-up GEMM with SiLU-and-mul into
    [T*topk, I], down GEMM times the routing weight into [T*topk, H], sum over topk).
    fp32 accumulators everywhere.

    FLOPs = 6 * T * topk * H * I (per pair: 2 * 2I * H gate+up, 2 * H * I down).
    Bytes = E_hit * (3 * H * I * bw + scale bytes) + 2 * T * H * b + 8 * T * topk, where b =
    activation bytes, bw = weight bytes (1 for e4m3) and E_hit = E * (1 - (1 - topk / E) ** T)
    is the expected number of experts hit under uniform routing; scratch round trips are not
    counted.
    """
    T, H = x.shape
    E, two_i, _ = w13.shape
    inter_size = two_i // 2
    topk = topk_ids.shape[1]
    if w13.shape[2] != H or w2.shape != (E, H, inter_size) or two_i % 2:
        raise ValueError(f"shapes x {tuple(x.shape)}, w13 {tuple(w13.shape)}, w2 {tuple(w2.shape)}")
    if topk_weights.shape != topk_ids.shape or topk_ids.shape[0] != T:
        raise ValueError(f"routing {tuple(topk_weights.shape)} / {tuple(topk_ids.shape)}, T={T}")
    _scales.check_weights(x, w13, w2, w13_scale, w2_scale)
    if act_quant and w13_scale is None:
        raise ValueError("act_quant (w8a8) needs FP8 experts: w13_scale / w2_scale")
    s13 = _scales.weight_scales(w13, w13_scale, block_shape)
    s2 = _scales.weight_scales(w2, w2_scale, block_shape)
    if out is None:
        out = _buffers.empty(tuple(x.shape), x.dtype, x.device)
    elif out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"out {tuple(out.shape)} {out.dtype} must be {tuple(x.shape)} {x.dtype}")
    if T == 0:
        return out
    if small_t is None:
        w8a16 = w13.element_size() == 1 and not act_quant
        small_t = T * topk <= _small.max_pairs(inter_size, 1 if w8a16 else 2)
    if small_t:
        return _small.small_t_moe(x, w13, w2, topk_weights, topk_ids, expert_map, s13, s2, out)
    cfg = config or pick_config(T, topk, E, x.device, inter_size, w13.dtype)
    if 0 in _grouped.tile_widths(cfg, s13, s2, inter_size):
        # Block scales too fine for a 16-wide tile (never at Rio's shapes): dequantize first.
        w13 = _fp8.dequantize(w13, w13_scale, block_shape, x.dtype)
        w2 = _fp8.dequantize(w2, w2_scale, block_shape, x.dtype)
        s13, s2 = _scales.weight_scales(w13, None, None), _scales.weight_scales(w2, None, None)
    a8_block_k = _aq.w8a8_block_k(block_shape) if act_quant and w13.dtype == _fp8.FP8 else 0
    return _grouped.grouped_moe(x, w13, w2, topk_weights, topk_ids, expert_map, s13, s2, out, cfg,
                                a8_block_k, block_shape)


def moe_flops_bytes(T: int, H: int, I: int, E: int, topk: int, dtype_bytes: int,
                    weight_bytes: int | None = None, block_shape: tuple[int, int] | None = None,
                    ep_size: int = 1) -> tuple[float, float]:
    """(FLOPs, bytes) of one fused_moe call; the formula in its docstring. Used by the bench.

    E: routed experts (global); weight_bytes: None = dtype_bytes (unquantized), 1 = e4m3 with
    fp32 scales per block of block_shape, or per channel (block_shape None); ep_size: one rank
    of E / ep_size local experts does 1 / ep_size of the expert work.
    """
    experts_hit = E * (1.0 - (1.0 - topk / E) ** T) / ep_size
    flops = 6.0 * T * topk * H * I / ep_size
    per_expert = 3.0 * H * I * (weight_bytes or dtype_bytes)
    if weight_bytes is not None:
        shapes = [(2 * I, H), (H, I)]
        per_expert += 4.0 * sum(_math.prod(_fp8.scale_shape(s, block_shape)) for s in shapes)
    nbytes = experts_hit * per_expert + 2.0 * T * H * dtype_bytes + 8.0 * T * topk
    return flops, nbytes

"""Grouped (prefill) path of `kernel.fused_moe`: pairs aligned by expert (align.py), gate+up GEMM
with SiLU-and-mul into [P, I], down GEMM times the routing weight into [P, H], top-k combine.

Tiles are tensor-core GEMMs over BLOCK_M pair rows of one expert. Programs run in grouped order
(GROUP_M row blocks per column sweep) so that concurrently running programs share both their
gathered activation rows and their expert's weight tiles in L2. FP8 weights (w8a16): e4m3 tiles
are converted in registers; block scales scale the tile's K rows, channel scales the accumulator.
W8a8 (ACT_SCALE, act_quant.py): e4m3 activations with one scale per row and K group; each K
step's e4m3 x e4m3 dot is scaled once (activation group x weight block) before it joins the
fp32 accumulator (BLOCK_K divides the block), or, with channel scales, the accumulator at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import buffers
from . import act_quant as _aq
from . import align as _align
from .fp8 import FP8, act_group
from .scales import Scales, fit_block_n, k_scales, n_scales

GROUP_M = 8
# w8a16 block scales on the dot (w16_step) where they may; False: on the weight tiles' K rows.
# An H100 (2026-11-27, bench/RESULTS.md) ran the dots' placement at 1.20-1.26x the other's
# TFLOP/s at T = 4096 and 16,384, each checked against the reference first; bench_fused_moe
# keeps timing the other placement (its "fp8, scales on the tiles" rows).
SCALE_DOTS = True


def scale_dot(scales: Scales, block_k: int, a8: bool) -> bool:
    """Whether a w8a16 GEMM with BLOCK_K = block_k scales its dots (w16_step)."""
    return SCALE_DOTS and scales.block and not a8 and scales.group_k % block_k == 0


@triton.jit
def tile_order(NUM_M, NUM_N, GROUP_M: tl.constexpr):
    """Program id -> (row block, column block), GROUP_M row blocks per sweep over the columns."""
    pid = tl.program_id(0)
    width = GROUP_M * NUM_N
    first_m = (pid // width) * GROUP_M
    size_m = tl.minimum(NUM_M - first_m, GROUP_M)
    return first_m + (pid % width) % size_m, (pid % width) // size_m


@triton.jit
def weight_tile(w_ptrs, k_ok, n_ok, s_ptr, e, n_block, offs_k, stride_se, stride_sn, stride_sk,
                GROUP_K, BLOCK_SCALE: tl.constexpr):
    """[BLOCK_K, BLOCK_N] weight tile, block scales applied along K (then fp32)."""
    w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
    if BLOCK_SCALE:
        s = k_scales(s_ptr, e, n_block, offs_k, k_ok, stride_se, stride_sn, stride_sk, GROUP_K)
        w = w.to(tl.float32) * s[:, None]
    return w


@triton.jit
def w16_step(acc, a, w_ptrs, k_ok, n_ok, s_ptr, e, n_block, k0, offs_k, stride_se, stride_sn,
             stride_sk, GROUP_K, BLOCK_SCALE: tl.constexpr, SCALE_DOT: tl.constexpr,
             PRECISION: tl.constexpr):
    """acc + a @ w for one K step with 16-bit activations. SCALE_DOT (block scales, BLOCK_K inside
    one block): the weights convert exactly and the block's one scale multiplies the fp32 dot;
    else the scales multiply the weight tile's K rows before the dot."""
    if SCALE_DOT:
        w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(a.dtype)
        s = tl.load(s_ptr + e.to(tl.int64) * stride_se + n_block * stride_sn
                    + (k0 // GROUP_K) * stride_sk)
        return acc + tl.dot(a, w, input_precision=PRECISION) * s
    w = weight_tile(w_ptrs, k_ok, n_ok, s_ptr, e, n_block, k0 + offs_k, stride_se, stride_sn,
                    stride_sk, GROUP_K, BLOCK_SCALE).to(a.dtype)
    return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def scaled_dot(a, a_s_ptrs, row_ok, w, s_ptr, e, n_block, k0, stride_se, stride_sn, stride_sk,
               GROUP_K, BLOCK_SCALE: tl.constexpr):
    """One K step of an e4m3 x e4m3 GEMM: [BLOCK_M, BLOCK_N] fp32, block scales applied."""
    if BLOCK_SCALE:
        a_s = tl.load(a_s_ptrs, mask=row_ok, other=0.0)
        w_s = tl.load(s_ptr + e.to(tl.int64) * stride_se + n_block * stride_sn
                      + (k0 // GROUP_K) * stride_sk)
        return tl.dot(a, w) * (a_s[:, None] * w_s)
    return tl.dot(a, w)


@triton.jit
def _gate_up_kernel(
    x_ptr, w_ptr, inter_ptr, sorted_pairs_ptr, block_expert_ptr,
    s_ptr, stride_se, stride_sn, stride_sk, GROUP_N, GROUP_K,
    as_ptr, stride_ast, stride_asg, A_GROUP,
    P, H, I, TOPK, NUM_M,
    stride_xt, stride_xh, stride_we, stride_wn, stride_wk, stride_ip, stride_ii,
    CHANNEL_SCALE: tl.constexpr, BLOCK_SCALE: tl.constexpr, ACT_SCALE: tl.constexpr,
    SCALE_DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = tile_order(NUM_M, tl.cdiv(I, BLOCK_N), GROUP_M)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    pair = tl.load(sorted_pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = pair < P
    token = (pair // TOPK).to(tl.int64)
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_ok = offs_n < I
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + token[:, None] * stride_xt + offs_k[None, :] * stride_xh
    wg_ptrs = (w_ptr + e.to(tl.int64) * stride_we
               + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk)
    wu_ptrs = wg_ptrs + I * stride_wn
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k_ok = offs_k < H - k0
        a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if ACT_SCALE:
            a_s_ptrs = as_ptr + token * stride_ast + (k0 // A_GROUP) * stride_asg
            w_ok = k_ok[:, None] & n_ok[None, :]
            acc_g += scaled_dot(a, a_s_ptrs, row_ok, tl.load(wg_ptrs, mask=w_ok, other=0.0), s_ptr,
                                e, n0 // GROUP_N, k0, stride_se, stride_sn, stride_sk, GROUP_K,
                                BLOCK_SCALE)
            acc_u += scaled_dot(a, a_s_ptrs, row_ok, tl.load(wu_ptrs, mask=w_ok, other=0.0), s_ptr,
                                e, (I + n0) // GROUP_N, k0, stride_se, stride_sn, stride_sk,
                                GROUP_K, BLOCK_SCALE)
        else:
            acc_g = w16_step(acc_g, a, wg_ptrs, k_ok, n_ok, s_ptr, e, n0 // GROUP_N, k0, offs_k,
                             stride_se, stride_sn, stride_sk, GROUP_K, BLOCK_SCALE, SCALE_DOT,
                             PRECISION)
            acc_u = w16_step(acc_u, a, wu_ptrs, k_ok, n_ok, s_ptr, e, (I + n0) // GROUP_N, k0,
                             offs_k, stride_se, stride_sn, stride_sk, GROUP_K, BLOCK_SCALE,
                             SCALE_DOT, PRECISION)
        x_ptrs += BLOCK_K * stride_xh
        wg_ptrs += BLOCK_K * stride_wk
        wu_ptrs += BLOCK_K * stride_wk
    if CHANNEL_SCALE:
        acc_g *= n_scales(s_ptr, e, offs_n, n_ok, stride_se, stride_sn)[None, :]
        acc_u *= n_scales(s_ptr, e, I + offs_n, n_ok, stride_se, stride_sn)[None, :]
    if ACT_SCALE and CHANNEL_SCALE:  # one activation scale per token
        a_s = tl.load(as_ptr + token * stride_ast, mask=row_ok, other=0.0)[:, None]
        acc_g *= a_s
        acc_u *= a_s
    h = acc_g * tl.sigmoid(acc_g) * acc_u
    i_ptrs = inter_ptr + pair[:, None].to(tl.int64) * stride_ip + offs_n[None, :] * stride_ii
    tl.store(i_ptrs, h.to(inter_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _down_kernel(
    inter_ptr, w_ptr, weights_ptr, pair_out_ptr, sorted_pairs_ptr, block_expert_ptr,
    s_ptr, stride_se, stride_sn, stride_sk, GROUP_N, GROUP_K,
    as_ptr, stride_asp, stride_asg, A_GROUP,
    P, H, I, NUM_M,
    stride_ip, stride_ii, stride_we, stride_wn, stride_wk, stride_op, stride_oh,
    CHANNEL_SCALE: tl.constexpr, BLOCK_SCALE: tl.constexpr, ACT_SCALE: tl.constexpr,
    SCALE_DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = tile_order(NUM_M, tl.cdiv(H, BLOCK_N), GROUP_M)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    pair = tl.load(sorted_pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = pair < P
    pair64 = pair.to(tl.int64)
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_ok = offs_n < H
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = inter_ptr + pair64[:, None] * stride_ip + offs_k[None, :] * stride_ii
    w_ptrs = (w_ptr + e.to(tl.int64) * stride_we
              + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        k_ok = offs_k < I - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if ACT_SCALE:
            a_s_ptrs = as_ptr + pair64 * stride_asp + (k0 // A_GROUP) * stride_asg
            w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc += scaled_dot(a, a_s_ptrs, row_ok, w, s_ptr, e, n0 // GROUP_N, k0,
                              stride_se, stride_sn, stride_sk, GROUP_K, BLOCK_SCALE)
        else:
            acc = w16_step(acc, a, w_ptrs, k_ok, n_ok, s_ptr, e, n0 // GROUP_N, k0, offs_k,
                           stride_se, stride_sn, stride_sk, GROUP_K, BLOCK_SCALE, SCALE_DOT,
                           PRECISION)
        a_ptrs += BLOCK_K * stride_ii
        w_ptrs += BLOCK_K * stride_wk
    if CHANNEL_SCALE:
        acc *= n_scales(s_ptr, e, offs_n, n_ok, stride_se, stride_sn)[None, :]
    if ACT_SCALE and CHANNEL_SCALE:  # one activation scale per pair
        acc *= tl.load(as_ptr + pair64 * stride_asp, mask=row_ok, other=0.0)[:, None]
    acc *= tl.load(weights_ptr + pair, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    o_ptrs = pair_out_ptr + pair64[:, None] * stride_op + offs_n[None, :] * stride_oh
    tl.store(o_ptrs, acc.to(pair_out_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _combine_kernel(
    pair_out_ptr, pair_expert_ptr, out_ptr, H, TOPK,
    stride_op, stride_ot, stride_oh,
    BLOCK_H: tl.constexpr,
):
    t = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = offs < H
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for k in range(TOPK):
        pair = t * TOPK + k
        local = tl.load(pair_expert_ptr + pair) >= 0
        v = tl.load(pair_out_ptr + pair.to(tl.int64) * stride_op + offs, mask=h_ok & local, other=0.0)
        acc += v.to(tl.float32)
    tl.store(out_ptr + t.to(tl.int64) * stride_ot + offs * stride_oh,
             acc.to(out_ptr.dtype.element_ty), mask=h_ok)


def tile_widths(cfg, s13: Scales, s2: Scales, inter_size: int) -> tuple[int, int]:
    """BLOCK_N of the gate-up and down GEMMs: cfg.block_n narrowed by block scales (0: none fits)."""
    n13 = fit_block_n(cfg.block_n, s13, inter_size)
    n2 = fit_block_n(cfg.block_n, s2)
    return (n13 if n13 >= 16 else 0), (n2 if n2 >= 16 else 0)


def act_scaled(a: torch.Tensor, group: int, row_expert: torch.Tensor | None = None) -> tuple:
    """A GEMM's activation arguments (a, scales, their row and group strides, group): e4m3 per
    token group when group > 0 (rows with row_expert < 0 skipped), else a itself, unscaled."""
    if not group:
        return a, a, 0, 0, 1
    R, K = a.shape
    q = buffers.empty((R, K), FP8, a.device)
    scale = buffers.empty((R, triton.cdiv(K, group)), torch.float32, a.device)
    _aq.quantize_act(a, group, q, scale, row_expert)
    return q, scale, scale.stride(0), scale.stride(1), group


def grouped_moe(x, w13, w2, topk_weights, topk_ids, expert_map, s13: Scales, s2: Scales, out, cfg,
                w8a8_block_k: int = 0, block_shape: tuple[int, int] | None = None):
    """Runs align and the three kernels: x [T, H], w13 [E, 2I, H], w2 [E, H, I] -> out [T, H].

    w8a8_block_k (act_quant.w8a8_block_k, e4m3 weights): w8a8 with this BLOCK_K; x and h are
    quantized per token group (act_quant.py; groups from block_shape) before their GEMMs.
    """
    T, H = x.shape
    E, two_i, _ = w13.shape
    I = two_i // 2
    P = topk_ids.numel()
    topk = topk_ids.shape[1]
    n13, n2 = tile_widths(cfg, s13, s2, I)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    blocks = _align.align_experts(topk_ids, E, cfg.block_m, expert_map)
    num_m = blocks.block_expert.numel()
    inter = buffers.empty((P, I), x.dtype, x.device)
    pair_out = buffers.empty((P, H), x.dtype, x.device)
    a8 = w8a8_block_k > 0
    common = {"BLOCK_M": cfg.block_m, "BLOCK_K": w8a8_block_k or cfg.block_k, "GROUP_M": GROUP_M,
              "ACT_SCALE": a8, "PRECISION": precision, "num_warps": cfg.num_warps,
              "num_stages": cfg.num_stages}
    a13 = act_scaled(x, act_group(block_shape, H) if a8 else 0)
    _gate_up_kernel[(num_m * triton.cdiv(I, n13),)](
        a13[0], w13, inter, blocks.sorted_pairs, blocks.block_expert, *s13.args(), *a13[1:],
        P, H, I, topk, num_m,
        a13[0].stride(0), a13[0].stride(1), w13.stride(0), w13.stride(1), w13.stride(2),
        inter.stride(0), inter.stride(1),
        BLOCK_N=n13, SCALE_DOT=scale_dot(s13, common["BLOCK_K"], a8), **s13.flags(), **common,
    )
    a2 = act_scaled(inter, act_group(block_shape, I) if a8 else 0, blocks.pair_expert)
    _down_kernel[(num_m * triton.cdiv(H, n2),)](
        a2[0], w2, topk_weights.reshape(P), pair_out, blocks.sorted_pairs, blocks.block_expert,
        *s2.args(), *a2[1:], P, H, I, num_m,
        a2[0].stride(0), a2[0].stride(1), w2.stride(0), w2.stride(1), w2.stride(2),
        pair_out.stride(0), pair_out.stride(1),
        BLOCK_N=n2, SCALE_DOT=scale_dot(s2, common["BLOCK_K"], a8), **s2.flags(), **common,
    )
    block_h = min(1024, triton.next_power_of_2(H))
    _combine_kernel[(T, triton.cdiv(H, block_h))](
        pair_out, blocks.pair_expert, out, H, topk,
        pair_out.stride(0), out.stride(0), out.stride(1),
        BLOCK_H=block_h,
    )
    return out

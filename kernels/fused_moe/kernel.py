"""Triton routed-expert MoE: expert align, grouped gate+up GEMM with SiLU-and-mul, grouped down
GEMM with the routing weight, top-k combine. Called by the MoE layer; checked against ref.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import align as _align
from . import fp8 as _fp8


@dataclass(frozen=True)
class MoeConfig:
    """Tile sizes shared by both grouped GEMMs (M: pair rows, N: output columns, K: reduction)."""

    block_m: int = 16
    block_n: int = 32
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 1


# Interpreted path: one fixed config, no autotune.
INTERPRET_CONFIG = MoeConfig()
# GPU: keyed on the average rows per expert, T * topk / E. First guesses, not yet tuned.
GPU_CONFIGS = (
    (4.0, MoeConfig(block_m=16, block_n=32, block_k=256, num_warps=4, num_stages=3)),
    (32.0, MoeConfig(block_m=32, block_n=64, block_k=128, num_warps=4, num_stages=3)),
    (float("inf"), MoeConfig(block_m=64, block_n=128, block_k=64, num_warps=8, num_stages=3)),
)


def pick_config(T: int, topk: int, E: int, device: torch.device) -> MoeConfig:
    """Tiles for T tokens routed top-k over E local experts on this device."""
    if device.type != "cuda" or triton.knobs.runtime.interpret:
        return INTERPRET_CONFIG
    rows_per_expert = T * topk / E
    return next(cfg for limit, cfg in GPU_CONFIGS if rows_per_expert <= limit)


@triton.jit
def _gate_up_kernel(
    x_ptr, w13_ptr, inter_ptr, sorted_pairs_ptr, block_expert_ptr,
    P, H, I, TOPK,
    stride_xt, stride_xh, stride_we, stride_wn, stride_wk, stride_ip, stride_ii,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    pair = tl.load(sorted_pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = pair < P
    token = (pair // TOPK).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < I
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + token[:, None] * stride_xt + offs_k[None, :] * stride_xh
    wg_ptrs = (w13_ptr + e.to(tl.int64) * stride_we
               + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk)
    wu_ptrs = wg_ptrs + I * stride_wn
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k_ok = offs_k < H - k0
        a = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wg = tl.load(wg_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        wu = tl.load(wu_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc_g = tl.dot(a, wg, acc_g, input_precision=PRECISION)
        acc_u = tl.dot(a, wu, acc_u, input_precision=PRECISION)
        x_ptrs += BLOCK_K * stride_xh
        wg_ptrs += BLOCK_K * stride_wk
        wu_ptrs += BLOCK_K * stride_wk
    h = acc_g * tl.sigmoid(acc_g) * acc_u
    i_ptrs = inter_ptr + pair[:, None].to(tl.int64) * stride_ip + offs_n[None, :] * stride_ii
    tl.store(i_ptrs, h.to(inter_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _down_kernel(
    inter_ptr, w2_ptr, weights_ptr, pair_out_ptr, sorted_pairs_ptr, block_expert_ptr,
    P, H, I,
    stride_ip, stride_ii, stride_we, stride_wn, stride_wk, stride_op, stride_oh,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    pair = tl.load(sorted_pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    row_ok = pair < P
    pair64 = pair.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < H
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = inter_ptr + pair64[:, None] * stride_ip + offs_k[None, :] * stride_ii
    w_ptrs = (w2_ptr + e.to(tl.int64) * stride_we
              + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        k_ok = offs_k < I - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ii
        w_ptrs += BLOCK_K * stride_wk
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
) -> torch.Tensor:
    """out[t] = sum_k w[t, k] * W2[e] @ (silu(W1g[e] @ x[t]) * (W1u[e] @ x[t])), e = topk_ids[t, k].

    x: [T, H]; w13: [E, 2I, H] (gate rows, then up rows); w2: [E, H, I], all one dtype;
    topk_weights: [T, topk] (fp32); topk_ids: [T, topk] int global ids. Returns [T, H] x.dtype.
    Tensor parallel: pass the I-shard (w13 [E, 2I/tp, H], w2 [E, H, I/tp]); the caller sums.
    Expert parallel: pass the local experts and expert_map [E_global] (global -> local or -1,
    see ref.ep_expert_map); non-local slots and negative ids contribute 0.
    config: tiles (default pick_config); out: optional [T, H] x.dtype buffer to write.
    FP8 experts: w13 / w2 in e4m3 with w13_scale / w2_scale as in fp8.py (block_shape (bn, bk)
    for block scales, None for per-channel). Interim: the weights are dequantized to x.dtype per
    call, then the bf16 path runs (right, not fast: the fp8-reading kernels replace this).
    Steps: align pairs by expert (align.py), gate+up GEMM with SiLU-and-mul into [T*topk, I],
    down GEMM times the routing weight into [T*topk, H], sum over topk. fp32 accumulators.

    FLOPs = 6 * T * topk * H * I (per pair: 2 * 2I * H gate+up, 2 * H * I down).
    Bytes = E_hit * 3 * H * I * b + 2 * T * H * b + 8 * T * topk, where b = dtype bytes and
    E_hit = E * (1 - (1 - topk / E) ** T) is the expected number of experts hit under uniform
    routing; the scratch round trips 2 * T * topk * (I + H) * b are not counted.
    """
    if (w13_scale is None) != (w2_scale is None):
        raise ValueError("FP8 experts need both w13_scale and w2_scale")
    if w13_scale is not None:
        w13 = _fp8.dequantize(w13, w13_scale, block_shape, x.dtype)
        w2 = _fp8.dequantize(w2, w2_scale, block_shape, x.dtype)
    T, H = x.shape
    E, two_i, _ = w13.shape
    inter_size = two_i // 2
    topk = topk_ids.shape[1]
    if w13.shape[2] != H or w2.shape != (E, H, inter_size) or two_i % 2:
        raise ValueError(f"shapes x {tuple(x.shape)}, w13 {tuple(w13.shape)}, w2 {tuple(w2.shape)}")
    if topk_weights.shape != topk_ids.shape or topk_ids.shape[0] != T:
        raise ValueError(f"routing {tuple(topk_weights.shape)} / {tuple(topk_ids.shape)}, T={T}")
    if not x.dtype == w13.dtype == w2.dtype:
        raise ValueError(f"dtypes x {x.dtype}, w13 {w13.dtype}, w2 {w2.dtype} must match")
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"out {tuple(out.shape)} {out.dtype} must be {tuple(x.shape)} {x.dtype}")
    if T == 0:
        return out
    cfg = config or pick_config(T, topk, E, x.device)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    blocks = _align.align_experts(topk_ids, E, cfg.block_m, expert_map)
    num_blocks = blocks.block_expert.numel()
    P = T * topk
    inter = _align.workspace((P, inter_size), x.dtype, x.device)
    pair_out = _align.workspace((P, H), x.dtype, x.device)
    weights = topk_weights.reshape(P)
    tiles = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_K": cfg.block_k,
             "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    _gate_up_kernel[(num_blocks, triton.cdiv(inter_size, cfg.block_n))](
        x, w13, inter, blocks.sorted_pairs, blocks.block_expert,
        P, H, inter_size, topk,
        x.stride(0), x.stride(1), w13.stride(0), w13.stride(1), w13.stride(2),
        inter.stride(0), inter.stride(1),
        PRECISION=precision, **tiles,
    )
    _down_kernel[(num_blocks, triton.cdiv(H, cfg.block_n))](
        inter, w2, weights, pair_out, blocks.sorted_pairs, blocks.block_expert,
        P, H, inter_size,
        inter.stride(0), inter.stride(1), w2.stride(0), w2.stride(1), w2.stride(2),
        pair_out.stride(0), pair_out.stride(1),
        PRECISION=precision, **tiles,
    )
    block_h = min(1024, triton.next_power_of_2(H))
    _combine_kernel[(T, triton.cdiv(H, block_h))](
        pair_out, blocks.pair_expert, out, H, topk,
        pair_out.stride(0), out.stride(0), out.stride(1),
        BLOCK_H=block_h,
    )
    return out


def moe_flops_bytes(T: int, H: int, I: int, E: int, topk: int, dtype_bytes: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one fused_moe call; the formula in its docstring. Used by the bench."""
    experts_hit = E * (1.0 - (1.0 - topk / E) ** T)
    flops = 6.0 * T * topk * H * I
    nbytes = experts_hit * 3 * H * I * dtype_bytes + 2.0 * T * H * dtype_bytes + 8.0 * T * topk
    return flops, nbytes

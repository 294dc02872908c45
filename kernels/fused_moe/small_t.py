"""Small-T (decode) path of `kernel.fused_moe`: two launches, no align, no combine launch.

1. `_gate_up_gemv_kernel`, grid (T * topk, I / BLOCK_N): each program reads its pair's expert id
   (through the EP map), streams BLOCK_N gate rows and the matching up rows of that expert, and
   writes silu(gate) * up for them into an fp32 [T * topk, I] scratch.
2. `_down_combine_kernel`, grid (T, H / BLOCK_N): each program loads BLOCK_N rows of W2 of all
   its token's local top-k experts at once ([topk, BLOCK_N, BLOCK_K] tiles, one wave of
   independent loads), and sums w[t, k] * W2[e] @ h in fp32 registers before one store of out[t].

Both are GEMVs (tl.sum over weight tiles, no tensor cores: a pair is one row), their tiles
sized by the table TILES per kernel and weight width (gemv_tiles): bf16 so that even T=1 at
I=128 gives ~1,000 programs and every SM streams weights. FP8 weights (w8a16): e4m3 tiles are
converted in registers; a K step is split into chunks inside one 128-wide scale block (SCALE_K),
and each chunk's fp32 partial dot products are multiplied by its one block scale (no per-weight
scaling, no per-column scale loads). Their tiles move twice the bytes per K step of bf16's
(`bench_fused_moe --sweep-fp8`: 1.4-1.9x bf16's speed at TP 8, T=1..32, on an H200).

Bound (`SMALL_T_MAX_PAIRS`): a pair's program reads its expert's slice even when another pair
of the same step routes to the same expert, so the weight bytes are P / E_hit(P) times the
minimum (P = T * topk pairs, E_hit = E * (1 - (1 - 1/E)^P) experts hit under uniform routing).
At E=512: 1.06 at P=64, 1.13 at P=128, 1.28 at P=256. Below P=128 that excess (at most 13%)
costs less than what the grouped path pays on top of its bytes: an align launch (~12 us on an
H100 at T=1), a combine launch, a [P, H] scratch round trip and 16-row tiles that are mostly
padding. Above it the grouped path's one read per expert wins. The crossover is measured by
bench_fused_moe (both paths forced at T=8..64). Measured on an H200 (bench/RESULTS_GPU_EARLIER.md,
2026-11-27): with narrow experts (I=128, TP 8) the small-T path stays faster up to T=64 x top-10
(640 pairs); with wide ones (I=1024, TP 1) the grouped path already wins at T=8 (80 pairs), so
wide experts take the small-T path only at T=1 (`max_pairs`). In e4m3 (w8a16) the grouped path
converts and scales every weight tile, and the small-T path beats it at I=1024 up to T=64 on an
H200 (2026-11-27, after the tiles above), and on an H100 up to T=32 before them and up to T=64
after them (fourth session, bench/RESULTS.md, with the grouped path's scales still on the
tiles): wide e4m3 experts take it up to T=32 x top-10 (320 pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .. import buffers, interpreted
from .scales import Scales, fit_block_n, k_scales, n_scales

SMALL_T_MAX_PAIRS = 640  # T * topk at or below this takes the small-T path, I <= NARROW_I
SMALL_T_MAX_PAIRS_WIDE = 16  # the same for wider experts: T=1 at top-10 (see above)
SMALL_T_MAX_PAIRS_WIDE_FP8 = 320  # wider experts in e4m3 (w8a16): T=32 at top-10 (see above)
NARROW_I = 256
# Programmatic dependent launch (Hopper): gate-up lets the down kernel launch at once, and down
# loads its first K step of weights (which need nothing from gate-up) before it waits for
# gate-up's output (griddepcontrol). Off until a GPU run shows it faster: bench_fused_moe times
# the small-T path both ways ("..., PDL" rows). Never under the interpreter (no griddepcontrol).
PDL = False


def max_pairs(inter_size: int, weight_bytes: int = 2) -> int:
    """The small-T bound on T * topk for experts of intermediate size I (this rank's shard) whose
    weights the kernels read as weight_bytes-byte elements (1: e4m3, w8a16)."""
    if inter_size <= NARROW_I:
        return SMALL_T_MAX_PAIRS
    return SMALL_T_MAX_PAIRS_WIDE_FP8 if weight_bytes == 1 else SMALL_T_MAX_PAIRS_WIDE


@triton.jit
def local_expert(topk_ids_ptr, expert_map_ptr, p, p_ok, E, E_GLOBAL, HAS_MAP: tl.constexpr):
    """Local expert of pair(s) p, or -1 where the id is negative, out of range, or not local."""
    e = tl.load(topk_ids_ptr + p, mask=p_ok, other=-1).to(tl.int32)
    if HAS_MAP:
        e = tl.load(expert_map_ptr + e, mask=p_ok & (e >= 0) & (e < E_GLOBAL), other=-1)
        e = e.to(tl.int32)
    return tl.where((e >= 0) & (e < E), e, -1)


@triton.jit
def _gate_up_gemv_kernel(
    x_ptr, w_ptr, inter_ptr, topk_ids_ptr, expert_map_ptr,
    s_ptr, stride_se, stride_sn, stride_sk, GROUP_N, GROUP_K,
    H, I, E, E_GLOBAL, TOPK,
    stride_xt, stride_xh, stride_we, stride_wn, stride_wk, stride_ip, stride_ii,
    HAS_MAP: tl.constexpr, CHANNEL_SCALE: tl.constexpr, BLOCK_SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALE_K: tl.constexpr,
    PDL: tl.constexpr = False,
):
    if PDL:  # the down kernel may launch now; its griddepcontrol.wait still waits for us
        tl.extra.cuda.gdc_launch_dependents()
    # A K step is BLOCK_K // SCALE_K chunks of SCALE_K columns, each inside one scale block:
    # [BLOCK_N, chunks, SCALE_K] tiles, one scale per chunk times its partial dot products.
    p = tl.program_id(0)
    n0 = tl.program_id(1) * BLOCK_N
    e = local_expert(topk_ids_ptr, expert_map_ptr, p, p >= 0, E, E_GLOBAL, HAS_MAP)
    if e < 0:
        return
    t = (p // TOPK).to(tl.int64)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_ok = offs_n < I
    chunk = tl.arange(0, BLOCK_K // SCALE_K) * SCALE_K
    offs_k = chunk[:, None] + tl.arange(0, SCALE_K)[None, :]  # [chunks, SCALE_K]
    x_ptrs = x_ptr + t * stride_xt + offs_k * stride_xh
    wg_ptrs = (w_ptr + e.to(tl.int64) * stride_we
               + offs_n[:, None, None].to(tl.int64) * stride_wn + offs_k[None, :, :] * stride_wk)
    wu_ptrs = wg_ptrs + I * stride_wn
    acc_g = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k_ok = offs_k < H - k0
        x = tl.load(x_ptrs, mask=k_ok, other=0.0).to(tl.float32)[None, :, :]
        w_ok = n_ok[:, None, None] & k_ok[None, :, :]
        part_g = tl.sum(tl.load(wg_ptrs, mask=w_ok, other=0.0).to(tl.float32) * x, 2)
        part_u = tl.sum(tl.load(wu_ptrs, mask=w_ok, other=0.0).to(tl.float32) * x, 2)
        if BLOCK_SCALE:
            c_ok = chunk < H - k0
            part_g *= k_scales(s_ptr, e, n0 // GROUP_N, k0 + chunk, c_ok,
                               stride_se, stride_sn, stride_sk, GROUP_K)[None, :]
            part_u *= k_scales(s_ptr, e, (I + n0) // GROUP_N, k0 + chunk, c_ok,
                               stride_se, stride_sn, stride_sk, GROUP_K)[None, :]
        acc_g += tl.sum(part_g, 1)
        acc_u += tl.sum(part_u, 1)
        x_ptrs += BLOCK_K * stride_xh
        wg_ptrs += BLOCK_K * stride_wk
        wu_ptrs += BLOCK_K * stride_wk
    if CHANNEL_SCALE:
        acc_g *= n_scales(s_ptr, e, offs_n, n_ok, stride_se, stride_sn)
        acc_u *= n_scales(s_ptr, e, I + offs_n, n_ok, stride_se, stride_sn)
    h = acc_g * tl.sigmoid(acc_g) * acc_u
    tl.store(inter_ptr + p.to(tl.int64) * stride_ip + offs_n * stride_ii, h, mask=n_ok)


@triton.jit
def _down_part(w, h, s_ptr, e64, e_ok, n0, k0, stride_se, stride_sn, stride_sk, GROUP_N, GROUP_K,
               BLOCK_SCALE: tl.constexpr):
    """One K step of the down GEMVs: w [BLOCK_T, BLOCK_N, BLOCK_K] x h [BLOCK_T, BLOCK_K] ->
    [BLOCK_T, BLOCK_N] fp32, times the step's block scale per slot where the weights have one."""
    part = tl.sum(w.to(tl.float32) * h[:, None, :], 2)
    if BLOCK_SCALE:  # BLOCK_K fits in a scale block: one scale per slot and K step
        part *= k_scales(s_ptr, e64, n0 // GROUP_N, k0, e_ok,
                         stride_se, stride_sn, stride_sk, GROUP_K)[:, None]
    return part


@triton.jit
def _down_combine_kernel(
    inter_ptr, w_ptr, weights_ptr, out_ptr, topk_ids_ptr, expert_map_ptr,
    s_ptr, stride_se, stride_sn, stride_sk, GROUP_N, GROUP_K,
    H, I, E, E_GLOBAL, TOPK,
    stride_ip, stride_ii, stride_we, stride_wn, stride_wk, stride_ot, stride_oh,
    HAS_MAP: tl.constexpr, CHANNEL_SCALE: tl.constexpr, BLOCK_SCALE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr = False,
):
    # All top-k slots at once ([BLOCK_T, BLOCK_N, BLOCK_K] tiles): one wave of independent loads.
    t = tl.program_id(0)
    n0 = tl.program_id(1) * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_ok = offs_n < H
    slot = tl.arange(0, BLOCK_T)
    p = t * TOPK + slot
    e = local_expert(topk_ids_ptr, expert_map_ptr, p, slot < TOPK, E, E_GLOBAL, HAS_MAP)
    e_ok = e >= 0
    e64 = tl.where(e_ok, e, 0).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    h_ptrs = inter_ptr + p.to(tl.int64)[:, None] * stride_ip + offs_k[None, :] * stride_ii
    w_ptrs = (w_ptr + e64[:, None, None] * stride_we
              + offs_n[None, :, None].to(tl.int64) * stride_wn + offs_k[None, None, :] * stride_wk)
    acc = tl.zeros([BLOCK_T, BLOCK_N], dtype=tl.float32)
    start = 0
    if PDL:  # the first K step: its weights load while gate-up may still run, then wait
        h_ok = e_ok[:, None] & (offs_k < I)[None, :]
        w = tl.load(w_ptrs, mask=h_ok[:, None, :] & n_ok[None, :, None], other=0.0)
        tl.extra.cuda.gdc_wait()
        acc += _down_part(w, tl.load(h_ptrs, mask=h_ok, other=0.0), s_ptr, e64, e_ok, n0, 0,
                          stride_se, stride_sn, stride_sk, GROUP_N, GROUP_K, BLOCK_SCALE)
        h_ptrs += BLOCK_K * stride_ii
        w_ptrs += BLOCK_K * stride_wk
        start = BLOCK_K
    for k0 in range(start, I, BLOCK_K):
        k_ok = offs_k < I - k0
        h_ok = e_ok[:, None] & k_ok[None, :]
        h = tl.load(h_ptrs, mask=h_ok, other=0.0)
        w = tl.load(w_ptrs, mask=h_ok[:, None, :] & n_ok[None, :, None], other=0.0)
        acc += _down_part(w, h, s_ptr, e64, e_ok, n0, k0,
                          stride_se, stride_sn, stride_sk, GROUP_N, GROUP_K, BLOCK_SCALE)
        h_ptrs += BLOCK_K * stride_ii
        w_ptrs += BLOCK_K * stride_wk
    if CHANNEL_SCALE:
        acc *= n_scales(s_ptr, e64[:, None], offs_n[None, :], e_ok[:, None] & n_ok[None, :],
                        stride_se, stride_sn)
    wt = tl.load(weights_ptr + p, mask=e_ok, other=0.0).to(tl.float32)
    total = tl.sum(acc * wt[:, None], 0)
    tl.store(out_ptr + t.to(tl.int64) * stride_ot + offs_n * stride_oh,
             total.to(out_ptr.dtype.element_ty), mask=n_ok)


@dataclass(frozen=True)
class GemvTiles:
    """How one small-T kernel sizes its tiles (gemv_tiles): about `programs` programs per launch,
    `tile_bytes` weight bytes loaded per K step by a program (all its tiles together), BLOCK_N at
    most `max_block_n`, `num_warps` warps."""

    programs: int
    tile_bytes: int
    max_block_n: int
    num_warps: int = 8


# (kernel, weight element bytes, 2 for 2 or more) -> tiles. bf16: measured on an H100 and an
# H200 (bench/RESULTS_GPU_EARLIER.md). e4m3: the best of `bench_fused_moe --sweep-fp8` on an
# H200 (2026-11-27), and again on an H100 (bench/RESULTS.md): twice bf16's bytes per K step,
# 4 warps for gate-up, 256 down programs.
TILES = {
    ("gate_up", 2): GemvTiles(programs=1024, tile_bytes=16384, max_block_n=16),
    ("down", 2): GemvTiles(programs=1024, tile_bytes=16384, max_block_n=16),
    ("gate_up", 1): GemvTiles(programs=1024, tile_bytes=32768, max_block_n=16, num_warps=4),
    ("down", 1): GemvTiles(programs=256, tile_bytes=32768, max_block_n=64),
}


def gemv_tiles(rows: int, n: int, k: int, limit: int, slots: int, nbytes: int,
               cfg: GemvTiles) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_K) for `rows` GEMVs of an [n, k] weight of nbytes-byte elements:
    ~cfg.programs programs, `slots` tiles loaded per K step, cfg.tile_bytes in all; BLOCK_N at
    most `limit` (what the scale blocks allow) and cfg.max_block_n.

    Interpreted (CPU), each program costs Python time: the widest tiles instead.
    """
    if interpreted():
        block_n = min(triton.next_power_of_2(n), 64, limit)
        return block_n, min(triton.next_power_of_2(k), 256)
    limit = min(limit, cfg.max_block_n)
    block_n = triton.next_power_of_2(max(1, rows * n // cfg.programs))
    block_n = min(max(2, min(block_n, triton.next_power_of_2(n))), limit)
    block_k = min(triton.next_power_of_2(k), max(16, cfg.tile_bytes // (nbytes * slots * block_n)))
    return block_n, block_k


def scale_k(block_k: int, scales: Scales) -> int:
    """Widest power-of-two K chunk (at most block_k) inside one scale block: block_k unscaled."""
    if not scales.block:
        return block_k
    return min(block_k, scales.group_k & -scales.group_k)


def small_t_moe(x, w13, w2, topk_weights, topk_ids, expert_map, s13: Scales, s2: Scales, out):
    """Runs the two kernels: x [T, H], w13 [E, 2I, H], w2 [E, H, I] -> out [T, H]."""
    T, H = x.shape
    E, two_i, _ = w13.shape
    I = two_i // 2
    P = topk_ids.numel()
    topk = topk_ids.shape[1]
    ids = topk_ids.reshape(P)
    emap = expert_map if expert_map is not None else ids  # placeholder pointer when unused
    routing = {"HAS_MAP": expert_map is not None}
    pdl = PDL and not interpreted()
    inter = buffers.empty((P, I), torch.float32, x.device)
    cfg = TILES["gate_up", min(w13.element_size(), 2)]
    bn, bk = gemv_tiles(P, I, H, fit_block_n(64, s13, I), 2, w13.element_size(), cfg)
    _gate_up_gemv_kernel[(P, triton.cdiv(I, bn))](
        x, w13, inter, ids, emap, *s13.args(),
        H, I, E, emap.numel(), topk,
        x.stride(0), x.stride(1), w13.stride(0), w13.stride(1), w13.stride(2),
        inter.stride(0), inter.stride(1),
        BLOCK_N=bn, BLOCK_K=bk, SCALE_K=scale_k(bk, s13), num_warps=cfg.num_warps,
        PDL=pdl, **routing, **s13.flags(),
    )
    block_t = triton.next_power_of_2(topk)
    cfg = TILES["down", min(w2.element_size(), 2)]
    bn, bk = gemv_tiles(T, H, I, fit_block_n(64, s2), block_t, w2.element_size(), cfg)
    _down_combine_kernel[(T, triton.cdiv(H, bn))](
        inter, w2, topk_weights.reshape(P), out, ids, emap, *s2.args(),
        H, I, E, emap.numel(), topk,
        inter.stride(0), inter.stride(1), w2.stride(0), w2.stride(1), w2.stride(2),
        out.stride(0), out.stride(1),
        BLOCK_T=block_t, BLOCK_N=bn, BLOCK_K=scale_k(bk, s2), num_warps=cfg.num_warps,
        PDL=pdl, launch_pdl=pdl, **routing, **s2.flags(),
    )
    return out

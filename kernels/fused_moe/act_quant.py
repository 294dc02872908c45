"""Per-token-group activation quantization to e4m3 (w8a8): Triton kernel; its reference is
fp8.quantize_act. Called by the grouped path (grouped.py) on x before the gate-up GEMM and on h
before the down GEMM when fused_moe runs with act_quant=True.

A row's `group` consecutive columns share one fp32 scale, amax / 448 (at least 1e-12), as in
DeepSeek-V3's recipe: group = the weight block's K width (128 for Rio's FP8 releases), or the
whole row for channel-scaled weights (compressed-tensors' dynamic per-token activations).

The kernel rounds x / scale to the e4m3 grid in fp32 (round to nearest even, saturating at 448)
and only then casts, so the cast is exact: the same bytes as torch's `.to(float8_e4m3fn)` on a
GPU and under the Triton 3.8 interpreter, whose fp32 -> e4m3 cast neither carries a rounded-up
mantissa into the exponent (126.2 -> 64) nor saturates (460 -> NaN).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import buffers
from .fp8 import FP8

TILE = 4096  # elements per program: rows x padded group
MIN_BLOCK_K = 32  # one Hopper fp8 MMA reduces 32 K values: narrower groups stay w8a16
MAX_BLOCK_K = 128  # 128 e4m3 bytes per row: DeepSeek-V3's block, one swizzled smem row


def w8a8_block_k(block_shape: tuple[int, int] | None) -> int:
    """BLOCK_K of both w8a8 GEMMs for e4m3 weights: MAX_BLOCK_K, narrowed to divide the weight
    block's K width (so a K step lies in one block); 0 below MIN_BLOCK_K (stay w8a16)."""
    if block_shape is None:
        return MAX_BLOCK_K
    bk = block_shape[1]
    width = min(bk & -bk, MAX_BLOCK_K)  # largest power of two dividing bk
    return width if width >= MIN_BLOCK_K else 0


@triton.jit
def e4m3_grid(r):
    """r: fp32 in [-448, 448] -> the nearest e4m3 value (ties to even), still fp32."""
    exponent = ((r.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    exponent = tl.maximum(exponent, -6)  # below 2^-6 e4m3 is subnormal: steps of 2^-9
    step = ((exponent - 3 + 127) << 23).to(tl.float32, bitcast=True)  # 3 mantissa bits
    inv_step = ((3 - exponent + 127) << 23).to(tl.float32, bitcast=True)
    # 1.5 * 2^23: (v + M) - M rounds |v| < 2^22 to an integer, ties to even (|v| <= 16 here).
    return ((r * inv_step + 12582912.0) - 12582912.0) * step


@triton.jit
def _quantize_act_kernel(
    x_ptr, q_ptr, s_ptr, row_expert_ptr, R, K, GROUP,
    stride_xr, stride_xk, stride_qr, stride_qk, stride_sr, stride_sg,
    HAS_ROW_EXPERT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_G: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    g = tl.program_id(1)
    cols = g * GROUP + tl.arange(0, BLOCK_G)
    rows64 = rows.to(tl.int64)
    row_ok = rows < R
    if HAS_ROW_EXPERT:
        row_ok &= tl.load(row_expert_ptr + rows, mask=row_ok, other=-1) >= 0
    ok = row_ok[:, None] & (cols < K)[None, :] & (tl.arange(0, BLOCK_G) < GROUP)[None, :]
    x = tl.load(x_ptr + rows64[:, None] * stride_xr + cols[None, :] * stride_xk,
                mask=ok, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.div_rn(tl.max(tl.abs(x), 1), 448.0), 1e-12)  # [BLOCK_R]
    r = tl.minimum(tl.maximum(tl.div_rn(x, scale[:, None]), -448.0), 448.0)
    q = e4m3_grid(r).to(q_ptr.dtype.element_ty)
    tl.store(q_ptr + rows64[:, None] * stride_qr + cols[None, :] * stride_qk, q, mask=ok)
    tl.store(s_ptr + rows64 * stride_sr + g * stride_sg, scale, mask=row_ok)


def quantize_act(x: torch.Tensor, group: int, q: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None,
                 row_expert: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [R, K] fp16/bf16/fp32 -> (q [R, K] e4m3, scale [R, ceil(K/group)] fp32), as
    fp8.quantize_act. q / scale: optional output buffers of those shapes. row_expert: optional
    [R] int; rows where it is negative (pairs of no local expert) are skipped, left unwritten.

    Bytes = R * K * (b + 1) + 4 * R * ceil(K / group) (b = x's element bytes); memory-bound.
    """
    R, K = x.shape
    groups = triton.cdiv(K, group)
    if q is None:
        q = buffers.empty((R, K), FP8, x.device)
    if scale is None:
        scale = buffers.empty((R, groups), torch.float32, x.device)
    if q.shape != (R, K) or scale.shape != (R, groups):
        raise ValueError(f"buffers {tuple(q.shape)}, {tuple(scale.shape)} for x {tuple(x.shape)}")
    if R == 0:
        return q, scale
    block_g = triton.next_power_of_2(min(group, K))
    block_r = max(1, min(triton.next_power_of_2(R), TILE // block_g))
    _quantize_act_kernel[(triton.cdiv(R, block_r), groups)](
        x, q, scale, x if row_expert is None else row_expert, R, K, group,
        x.stride(0), x.stride(1), q.stride(0), q.stride(1), scale.stride(0), scale.stride(1),
        HAS_ROW_EXPERT=row_expert is not None, BLOCK_R=block_r, BLOCK_G=block_g, num_warps=4,
    )
    return q, scale

"""FP8 weight scales as the Triton kernels read them (small_t.py, grouped.py): which layout, its
strides and group sizes, the tile widths a layout allows, and the jit helpers that load scales.

Layouts as in fp8.py ("w = q * scale"). A kernel never dequantizes a weight tile elementwise:
- channel scales (one per output row n) multiply the fp32 accumulator once, after the K loop;
- block scales (one per bn x bk block) are constant over a tile's rows when the tile's rows lie
  in one row block (BLOCK_N divides bn and the tile start is a multiple of BLOCK_N), so they
  form a [BLOCK_K] vector over k: the grouped GEMM scales its weight tile's K rows with it; the
  small-T GEMVs split a K step into chunks inside one block and scale each chunk's partial sums.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import fp8 as _fp8


class Scales(NamedTuple):
    """How a kernel reads one weight's scales. ptr is the weight itself when there are none."""

    channel: bool
    block: bool
    ptr: torch.Tensor
    stride_e: int
    stride_n: int
    stride_k: int
    group_n: int
    group_k: int

    def args(self) -> tuple:
        return (self.ptr, self.stride_e, self.stride_n, self.stride_k, self.group_n, self.group_k)

    def flags(self) -> dict:
        return {"CHANNEL_SCALE": self.channel, "BLOCK_SCALE": self.block}


def weight_scales(w: torch.Tensor, scale: torch.Tensor | None,
                  block_shape: tuple[int, int] | None) -> Scales:
    """w: [E, N, K]; scale: None, [E, N] (channel) or [E, ceil(N/bn), ceil(K/bk)] (block)."""
    if scale is None:
        return Scales(False, False, w, 0, 0, 0, 1, 1)
    expect = _fp8.scale_shape(tuple(w.shape), block_shape)
    if tuple(scale.shape) != expect:
        raise ValueError(f"scale {tuple(scale.shape)} for weight {tuple(w.shape)}, "
                         f"block_shape {block_shape}: expected {expect}")
    if block_shape is None:
        return Scales(True, False, scale, scale.stride(0), scale.stride(1), 0, 1, 1)
    bn, bk = block_shape
    return Scales(False, True, scale, scale.stride(0), scale.stride(1), scale.stride(2), bn, bk)


def max_block_n(scales: Scales, *row_offsets: int) -> int:
    """Widest power-of-two tile width whose tiles stay inside one scale row block.

    row_offsets: where the kernel's row ranges start inside N (gate-up: 0 and I for the up half).
    Unbounded (1 << 30) without block scales.
    """
    if not scales.block:
        return 1 << 30
    g = scales.group_n
    for off in row_offsets:
        g = math.gcd(g, off) if off else g
    return g & -g  # largest power of two dividing g


def fit_block_n(block_n: int, scales: Scales, *row_offsets: int) -> int:
    """block_n narrowed to what the scale layout allows (0 if below one lane)."""
    return min(block_n, max_block_n(scales, *row_offsets))


@triton.jit
def k_scales(s_ptr, e, n_block, offs_k, k_ok, stride_e, stride_n, stride_k, GROUP_K):
    """Block scales of row block n_block of expert e at columns offs_k: [BLOCK_K] fp32."""
    ptrs = s_ptr + e.to(tl.int64) * stride_e + n_block * stride_n + (offs_k // GROUP_K) * stride_k
    return tl.load(ptrs, mask=k_ok, other=0.0).to(tl.float32)


@triton.jit
def n_scales(s_ptr, e, offs_n, n_ok, stride_e, stride_n):
    """Channel scales of expert e at rows offs_n: [BLOCK_N] fp32."""
    ptrs = s_ptr + e.to(tl.int64) * stride_e + offs_n * stride_n
    return tl.load(ptrs, mask=n_ok, other=0.0).to(tl.float32)


def check_weights(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                  w13_scale: torch.Tensor | None, w2_scale: torch.Tensor | None) -> None:
    """Unscaled weights share x's dtype; scaled ones hold quantized values (e4m3, or any float)."""
    if (w13_scale is None) != (w2_scale is None):
        raise ValueError("FP8 experts need both w13_scale and w2_scale")
    if w13_scale is None and not x.dtype == w13.dtype == w2.dtype:
        raise ValueError(f"dtypes x {x.dtype}, w13 {w13.dtype}, w2 {w2.dtype} must match")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x dtype {x.dtype}: fp16, bf16 or fp32 activations")

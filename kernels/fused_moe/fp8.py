"""FP8 (e4m3) expert weights: quantize / dequantize in plain torch, shared by the loader, the
tiny writer and the kernels' fp32 references.

Two scale layouts, both "w = q * scale" (scale is what Qwen calls `weight_scale_inv`):
- block: w [..., N, K] -> scale [..., ceil(N/bn), ceil(K/bk)] fp32, one per bn x bk block
  (Qwen's FP8 releases: `weight_block_size` [128, 128]);
- channel: w [..., N, K] -> scale [..., N] fp32, one per output row (compressed-tensors
  `weight_scale` [N, 1] squeezed).
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max


def _expand(scale: torch.Tensor, shape: torch.Size, block: tuple[int, int]) -> torch.Tensor:
    """scale [..., nb, kb] -> [..., N, K]: each block's scale repeated over its elements."""
    bn, bk = block
    n, k = shape[-2], shape[-1]
    full = scale.repeat_interleave(bn, dim=-2).repeat_interleave(bk, dim=-1)
    return full[..., :n, :k]


def _div_max(amax: torch.Tensor) -> torch.Tensor:
    """amax / 448 correctly rounded, at least 1e-12. On CUDA, dividing by a Python number
    multiplies by its rounded reciprocal (one ulp off in about half the cases); act_quant.py's
    kernel divides, so a 0-dim tensor divisor keeps the reference's scales equal to its scales."""
    return (amax / amax.new_tensor(FP8_MAX)).clamp_min(1e-12)


def scale_shape(shape: tuple[int, ...], block: tuple[int, int] | None) -> tuple[int, ...]:
    """The scale tensor's shape for a weight of `shape` ([..., N, K]); block None = channel."""
    *lead, n, k = shape
    if block is None:
        return (*lead, n)
    bn, bk = block
    return (*lead, -(-n // bn), -(-k // bk))


def quantize_block(w: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [..., N, K] float -> (q [..., N, K] e4m3, scale [..., ceil(N/bn), ceil(K/bk)] fp32)."""
    bn, bk = block
    *lead, n, k = w.shape
    nb, kb = -(-n // bn), -(-k // bk)
    padded = torch.zeros(*lead, nb * bn, kb * bk, dtype=torch.float32, device=w.device)
    padded[..., :n, :k] = w.float()
    tiles = padded.reshape(*lead, nb, bn, kb, bk)
    amax = tiles.abs().amax(dim=(-3, -1))  # [..., nb, kb]
    scale = _div_max(amax)  # [..., nb, kb]
    q = (w.float() / _expand(scale, w.shape, block)).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def quantize_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [..., N, K] float -> (q [..., N, K] e4m3, scale [..., N] fp32)."""
    scale = _div_max(w.float().abs().amax(dim=-1))  # [..., N]
    q = (w.float() / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int] | None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q: [..., N, K] e4m3, scale per `scale_shape` -> [..., N, K] dtype (computed in fp32)."""
    if block is None:
        full = scale.float()[..., None]
    else:
        full = _expand(scale.float(), q.shape, block)
    return (q.float() * full).to(dtype)


def quantize_act(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token-group activation quantization (w8a8), the reference of act_quant.py's kernel:
    x: [R, K] float -> (q [R, K] e4m3, scale [R, ceil(K/group)] fp32), one scale per `group`
    consecutive columns of a row; group = K: one per row (per-token dynamic scales)."""
    return quantize_block(x, (1, group))


def act_group(block: tuple[int, int] | None, k: int) -> int:
    """Activation group width for a GEMM reducing over k: the weight block's K width, or the
    whole row (per-token scales) for channel-scaled weights."""
    return k if block is None else block[1]


def act_round_trip(x: torch.Tensor, group: int) -> torch.Tensor:
    """x: [R, K] -> [R, K] fp32, quantized per token group and dequantized (what w8a8 sees)."""
    q, scale = quantize_act(x, group)
    return dequantize(q, scale, (1, group))

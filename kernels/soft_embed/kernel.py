"""Soft embeddings in Triton: dense p @ E, top-k gather-sum, and the delimiter blend.

Called by `rio_sglang.reasoning.ops` on every SwiReasoning decode step; `ref.py` is the torch twin.
All three load any float dtype and accumulate in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import buffers

BLOCK_B = 16  # tl.dot needs >= 16 rows
BLOCK_V = 64
BLOCK_H = 64
BLOCK_K = 64
V_PER_SPLIT = 8192  # the vocabulary is split over programs, partial sums added in fp32


@triton.jit
def _dense_kernel(
    p_ptr, w_ptr, part_ptr,
    B, V, H, stride_pb, stride_wv, v_per_split,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    split = tl.program_id(2)
    acc = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    for off in range(0, v_per_split, BLOCK_V):
        rv = split * v_per_split + off + tl.arange(0, BLOCK_V)
        p_mask = (rb[:, None] < B) & (rv[None, :] < V)
        p = tl.load(p_ptr + rb[:, None] * stride_pb + rv[None, :], mask=p_mask, other=0.0)
        w_mask = (rv[:, None] < V) & (rh[None, :] < H)
        w = tl.load(w_ptr + rv[:, None] * stride_wv + rh[None, :], mask=w_mask, other=0.0)
        acc += tl.dot(p.to(tl.float32), w.to(tl.float32), input_precision=PRECISION)
    out = part_ptr + split * B * H + rb[:, None] * H + rh[None, :]
    tl.store(out, acc, mask=(rb[:, None] < B) & (rh[None, :] < H))


@triton.jit
def _topk_kernel(
    p_ptr, id_ptr, w_ptr, out_ptr,
    K, H, stride_pb, stride_ib, stride_wv,
    BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
):
    b = tl.program_id(0)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_H], tl.float32)
    for off in range(0, K, BLOCK_K):
        rk = off + tl.arange(0, BLOCK_K)
        ids = tl.load(id_ptr + b * stride_ib + rk, mask=rk < K, other=-1).to(tl.int64)
        valid = ids >= 0
        p = tl.load(p_ptr + b * stride_pb + rk, mask=valid, other=0.0).to(tl.float32)
        w_mask = valid[:, None] & (rh[None, :] < H)
        w = tl.load(w_ptr + ids[:, None] * stride_wv + rh[None, :], mask=w_mask, other=0.0)
        acc += tl.sum(p[:, None] * w.to(tl.float32), axis=0)
    tl.store(out_ptr + b * H + rh, acc.to(out_ptr.dtype.element_ty), mask=rh < H)


@triton.jit
def _blend_kernel(
    x_ptr, w_ptr, id_ptr, a_ptr, out_ptr,
    H, stride_xb, stride_wv,
    BLOCK_H: tl.constexpr,
):
    b = tl.program_id(0)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    in_row = rh < H
    x = tl.load(x_ptr + b * stride_xb + rh, mask=in_row, other=0.0).to(tl.float32)
    tok = tl.load(id_ptr + b).to(tl.int64)
    a = tl.load(a_ptr + b).to(tl.float32)
    e = tl.load(w_ptr + tok * stride_wv + rh, mask=in_row & (tok >= 0), other=0.0)
    blended = a * x + (1 - a) * e.to(tl.float32)
    out = tl.where(tok >= 0, blended, x)
    tl.store(out_ptr + b * H + rh, out.to(out_ptr.dtype.element_ty), mask=in_row)


def soft_embed(probs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """probs: [B, V] any float, weight: [V, H] -> probs @ weight: [B, H] weight.dtype.

    fp32 accumulation (fp32 weights: IEEE products; 16-bit weights: tf32 on tensor cores).
    Bytes: V * H * sizeof(weight) + B * V * sizeof(probs) + B * H * 4 * splits. FLOPs: 2 B V H.
    """
    assert probs.stride(1) == 1 and weight.stride(1) == 1, "rows must be contiguous"
    B, V = probs.shape
    H = weight.shape[1]
    v_per_split = min(V_PER_SPLIT, triton.cdiv(V, BLOCK_V) * BLOCK_V)
    splits = triton.cdiv(V, v_per_split)
    part = buffers.empty((splits, B, H), torch.float32, probs.device)
    grid = (triton.cdiv(B, BLOCK_B), triton.cdiv(H, BLOCK_H), splits)
    _dense_kernel[grid](
        probs, weight, part, B, V, H, probs.stride(0), weight.stride(0), v_per_split,
        BLOCK_B=BLOCK_B, BLOCK_V=BLOCK_V, BLOCK_H=BLOCK_H,
        PRECISION="ieee" if weight.dtype == torch.float32 else "tf32",
    )
    return part.sum(dim=0).to(weight.dtype)


def soft_embed_topk(probs: torch.Tensor, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """probs: [B, K], ids: [B, K] int (-1 = empty slot), weight: [V, H] -> [B, H] weight.dtype.

    out[b] = sum_k probs[b, k] * weight[ids[b, k]]: no renormalisation here.
    Bytes: B * K * (H * sizeof(weight) + sizeof(probs) + sizeof(ids)) + B * H * sizeof(out).
    FLOPs: 2 B K H.
    """
    assert probs.shape == ids.shape and probs.stride(1) == 1 and ids.stride(1) == 1
    B, K = probs.shape
    H = weight.shape[1]
    out = buffers.empty((B, H), weight.dtype, weight.device)
    _topk_kernel[(B, triton.cdiv(H, BLOCK_H))](
        probs, ids, weight, out, K, H, probs.stride(0), ids.stride(0), weight.stride(0),
        BLOCK_K=BLOCK_K, BLOCK_H=BLOCK_H,
    )
    return out


def delimiter_blend(
    x: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, a: torch.Tensor
) -> torch.Tensor:
    """x: [B, H], weight: [V, H], ids: [B] int (-1 = keep x), a: [B] fp32 -> [B, H] x.dtype.

    out[b] = a[b] * x[b] + (1 - a[b]) * weight[ids[b]] where ids[b] >= 0, else x[b].
    Bytes: B * H * (2 * sizeof(x) + sizeof(weight)) + 12 B. FLOPs: 3 B H.
    """
    assert x.stride(1) == 1 and weight.stride(1) == 1
    B, H = x.shape
    out = buffers.empty((B, H), x.dtype, x.device)
    _blend_kernel[(B, triton.cdiv(H, BLOCK_H))](
        x, weight, ids, a, out, H, x.stride(0), weight.stride(0), BLOCK_H=BLOCK_H
    )
    return out


def soft_embed_bytes(probs: torch.Tensor, weight: torch.Tensor) -> int:
    """The dense docstring's byte count, for the benchmark's GB/s (partials left out)."""
    return weight.numel() * weight.element_size() + probs.numel() * probs.element_size()


def soft_embed_topk_bytes(probs: torch.Tensor, ids: torch.Tensor, weight: torch.Tensor) -> int:
    """The top-k docstring's byte count, for the benchmark's GB/s."""
    B, K = probs.shape
    row = weight.shape[1] * weight.element_size()
    return B * K * (row + probs.element_size() + ids.element_size()) + B * row

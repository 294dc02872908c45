"""Fused softmax entropy over the vocabulary: one read of the logits, online max / sum in fp32.

Called by `rio_sglang.reasoning.ops` on every SwiReasoning decode step; `ref.py` is the torch twin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import buffers

CHUNK = 16384  # vocab entries per program: V = 248,320 splits over 16 programs per row
BLOCK = 1024


@triton.jit
def _merge(m, s, t, m_new):
    """Re-bases (s, t) from max m to max m_new >= m; s = sum e^(z-m), t = sum e^(z-m) (z-m)."""
    live = s > 0  # where s == 0 the maxima may be -inf: keep -inf - -inf out of the arithmetic
    shift = tl.where(live, m, 0.0) - tl.where(live, m_new, 0.0)
    scale = tl.where(live, tl.exp(shift), 0.0)
    return scale * s, scale * (t + s * shift)


@triton.jit
def _entropy_chunk_kernel(
    logits_ptr, m_ptr, s_ptr, t_ptr, arg_ptr,
    V, stride_b, n_chunks,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    m = tl.full([BLOCK], float("-inf"), tl.float32)  # per-lane running max
    s = tl.zeros([BLOCK], tl.float32)
    t = tl.zeros([BLOCK], tl.float32)
    arg = tl.zeros([BLOCK], tl.int32)
    for off in range(0, CHUNK, BLOCK):
        idx = chunk * CHUNK + off + tl.arange(0, BLOCK)
        z = tl.load(logits_ptr + row * stride_b + idx, mask=idx < V, other=float("-inf"))
        z = z.to(tl.float32)
        better = z > m
        arg = tl.where(better, idx, arg)
        m_new = tl.maximum(m, z)
        s, t = _merge(m, s, t, m_new)
        finite = z > float("-inf")
        zd = tl.where(finite, z - tl.where(finite, m_new, 0.0), 0.0)
        w = tl.where(finite, tl.exp(zd), 0.0)
        s += w
        t += w * zd
        m = m_new
    m_all = tl.max(m, axis=0)
    s, t = _merge(m, s, t, m_all)
    # First index among the lanes holding the maximum (ties go to the lowest id, as torch).
    arg_all = tl.min(tl.where(m == m_all, arg, 2147483647), axis=0)
    out = row * n_chunks + chunk
    tl.store(m_ptr + out, m_all)
    tl.store(s_ptr + out, tl.sum(s, axis=0))
    tl.store(t_ptr + out, tl.sum(t, axis=0))
    tl.store(arg_ptr + out, arg_all)


@triton.jit
def _entropy_combine_kernel(
    m_ptr, s_ptr, t_ptr, arg_ptr, h_ptr, pmax_ptr, argmax_ptr,
    n_chunks, WITH_MAX: tl.constexpr, NC: tl.constexpr,
):
    row = tl.program_id(0)
    c = tl.arange(0, NC)
    valid = c < n_chunks
    m = tl.load(m_ptr + row * n_chunks + c, mask=valid, other=float("-inf"))
    s = tl.load(s_ptr + row * n_chunks + c, mask=valid, other=0.0)
    t = tl.load(t_ptr + row * n_chunks + c, mask=valid, other=0.0)
    m_all = tl.max(m, axis=0)
    s, t = _merge(m, s, t, m_all)
    s_all = tl.sum(s, axis=0)
    tl.store(h_ptr + row, tl.log(s_all) - tl.sum(t, axis=0) / s_all)
    if WITH_MAX:
        arg = tl.load(arg_ptr + row * n_chunks + c, mask=valid, other=2147483647)
        tl.store(pmax_ptr + row, 1.0 / s_all)
        tl.store(argmax_ptr + row, tl.min(tl.where(m == m_all, arg, 2147483647), axis=0))


def _launch(logits: torch.Tensor, with_max: bool):
    assert logits.ndim == 2 and logits.stride(1) == 1, "logits: [B, V], rows contiguous"
    B, V = logits.shape
    chunk = min(CHUNK, triton.cdiv(V, BLOCK) * BLOCK)
    n_chunks = triton.cdiv(V, chunk)
    dev = logits.device
    m, s, t = (buffers.empty((B, n_chunks), torch.float32, dev) for _ in range(3))
    arg = buffers.empty((B, n_chunks), torch.int32, dev)
    _entropy_chunk_kernel[(B, n_chunks)](
        logits, m, s, t, arg, V, logits.stride(0), n_chunks, CHUNK=chunk, BLOCK=BLOCK
    )
    entropy = buffers.empty((B,), torch.float32, dev)
    max_prob = buffers.empty((B,), torch.float32, dev)
    argmax = buffers.empty((B,), torch.int64, dev)
    _entropy_combine_kernel[(B,)](
        m, s, t, arg, entropy, max_prob, argmax,
        n_chunks, WITH_MAX=with_max, NC=triton.next_power_of_2(n_chunks),
    )
    return entropy, max_prob, argmax


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """logits: [B, V] fp32 / bf16 / fp16 (-inf allowed) -> entropy [B] fp32 (nats).

    Exact entropy, where the reference clamps p at 1e-12: they differ by < V * 3e-11.
    Bytes: B * V * sizeof(logits) read (+ 16 B per row and chunk). FLOPs: ~6 B * V (+ B * V exp).
    """
    return _launch(logits, with_max=False)[0]


def softmax_entropy_max(
    logits: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits: [B, V] -> (entropy [B] fp32, max prob [B] fp32, argmax [B] int64, first on ties).

    Bytes: B * V * sizeof(logits) read (+ 16 B per row and chunk). FLOPs: ~7 B * V (+ B * V exp).
    """
    return _launch(logits, with_max=True)


def bytes_moved(logits: torch.Tensor) -> int:
    """The byte count the docstrings state, for the benchmark's GB/s."""
    return logits.numel() * logits.element_size()

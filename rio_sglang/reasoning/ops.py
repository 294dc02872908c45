"""Kernel dispatch for the reasoning state: Triton on CUDA or under the interpreter, else torch.

`state.py` calls these; the Triton modules are imported on first use, never at import time.
"""

from __future__ import annotations

import os

import torch

from rio_kernels.entropy.ref import softmax_entropy_ref
from rio_kernels.soft_embed.ref import delimiter_blend_ref, soft_embed_ref, soft_embed_topk_ref


def use_triton(t: torch.Tensor) -> bool:
    """Triton runs on CUDA tensors, and on CPU ones only under Triton's own interpreter."""
    # TRITON_INTERPRET is Triton's switch, not ours: it must be read where Triton reads it.
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """logits: [B, V] -> entropy [B] fp32."""
    if use_triton(logits):
        from rio_kernels.entropy.kernel import softmax_entropy as kernel

        return kernel(logits.contiguous())
    return softmax_entropy_ref(logits)


def soft_embed(probs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """probs: [B, V], weight: [V, H] -> [B, H] weight.dtype."""
    if use_triton(probs):
        from rio_kernels.soft_embed.kernel import soft_embed as kernel

        return kernel(probs.contiguous(), weight)
    return soft_embed_ref(probs, weight)


def soft_embed_topk(probs: torch.Tensor, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """probs: [B, K], ids: [B, K] (-1 = empty), weight: [V, H] -> [B, H] weight.dtype."""
    if use_triton(probs):
        from rio_kernels.soft_embed.kernel import soft_embed_topk as kernel

        return kernel(probs.contiguous(), ids.contiguous(), weight)
    return soft_embed_topk_ref(probs, ids, weight)


def delimiter_blend(
    x: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, a: torch.Tensor
) -> torch.Tensor:
    """x: [B, H], ids: [B] (-1 = keep x), a: [B] -> a * x + (1 - a) * weight[ids]: [B, H]."""
    if use_triton(x):
        from rio_kernels.soft_embed.kernel import delimiter_blend as kernel

        return kernel(x.contiguous(), weight, ids.contiguous(), a.contiguous())
    return delimiter_blend_ref(x, weight, ids, a)

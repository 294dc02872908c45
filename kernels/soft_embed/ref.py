"""Plain fp32 torch soft embeddings: the reference `kernel.py` is tested against.

A latent step's input is a probability mixture of embedding rows, sometimes blended with the
row of a delimiter token (`<think>` / `</think>`).
"""

from __future__ import annotations

import torch


def soft_embed_ref(probs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """probs: [B, V] any float, weight: [V, H] -> probs @ weight: [B, H] weight.dtype."""
    return (probs.float() @ weight.float()).to(weight.dtype)  # [B, H]


def soft_embed_topk_ref(
    probs: torch.Tensor, ids: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """probs: [B, K], ids: [B, K] int (-1 = empty slot), weight: [V, H] -> [B, H] weight.dtype.

    out[b] = sum_k probs[b, k] * weight[ids[b, k]]: no renormalisation here.
    """
    valid = ids >= 0  # [B, K]
    rows = weight.float()[ids.clamp_min(0)]  # [B, K, H]
    p = torch.where(valid, probs.float(), 0.0)  # [B, K]
    return torch.einsum("bk,bkh->bh", p, rows).to(weight.dtype)  # [B, H]


def delimiter_blend_ref(
    x: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, a: torch.Tensor
) -> torch.Tensor:
    """x: [B, H], weight: [V, H], ids: [B] int (-1 = keep x), a: [B] fp32 -> [B, H] x.dtype.

    out[b] = a[b] * x[b] + (1 - a[b]) * weight[ids[b]] where ids[b] >= 0, else x[b].
    """
    a = a.float()[:, None]  # [B, 1]
    e = weight.float()[ids.clamp_min(0)]  # [B, H]
    blended = a * x.float() + (1 - a) * e  # [B, H]
    return torch.where((ids >= 0)[:, None], blended, x.float()).to(x.dtype)  # [B, H]

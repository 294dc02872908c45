"""Plain fp32 torch softmax entropy: the reference `kernel.py` is tested against.

Same formula as SwiReasoning's reference loop: H = -sum p log max(p, 1e-12), p = softmax(z).
"""

from __future__ import annotations

import torch


def softmax_entropy_ref(logits: torch.Tensor) -> torch.Tensor:
    """logits: [B, V] any float dtype (-inf allowed) -> entropy [B] fp32 (nats)."""
    probs = torch.softmax(logits.float(), dim=-1)  # [B, V]
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)  # [B]


def softmax_entropy_max_ref(
    logits: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits: [B, V] -> (entropy [B] fp32, max prob [B] fp32, argmax [B] int64, first on ties)."""
    probs = torch.softmax(logits.float(), dim=-1)  # [B, V]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)  # [B]
    argmax = logits.float().argmax(dim=-1)  # [B]
    max_prob = probs.gather(1, argmax[:, None]).squeeze(1)  # [B]
    return entropy, max_prob, argmax

"""Plain fp32 torch twins of the fused step's two logits passes (`launch.row_stats`,
`launch.pre_sample`'s mixture). The whole step's twin is the single-request specification,
`rio_sglang.reasoning.reference.swir_step`."""

from __future__ import annotations

import torch


def lse_entropy_ref(logits: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """logits: [R, V] raw -> (log-sum-exp [R], entropy [R]) fp32 of the logits rounded to dtype."""
    z = logits.to(dtype).float()  # [R, V]
    top = z.max(dim=-1, keepdim=True).values  # [R, 1]: log-probs relative to it stay exact
    zs = z - top
    lse = torch.logsumexp(zs, dim=-1, keepdim=True)  # [R, 1]
    p = torch.exp(zs - lse)  # [R, V]
    return (top + lse)[:, 0], -(p * torch.where(p > 0, zs - lse, 0.0)).sum(-1)


def mix_ref(logits: torch.Tensor, table: torch.Tensor, v_start: int, v_len: int) -> torch.Tensor:
    """logits: [R, V], table: [>= v_len, H] rows of vocab ids [v_start, v_start + v_len)
    -> [R, H] fp32: sum over the shard of softmax(logits)[v] * table[v - v_start]."""
    lse, _ = lse_entropy_ref(logits, table.dtype)
    z = logits[:, v_start:v_start + v_len].to(table.dtype).float()  # [R, v_len]
    return torch.exp(z - lse[:, None]) @ table[:v_len].float()  # [R, H]

"""Routing for the routed-expert MoE: the model's top-k over the router logits, and the
expert-parallel map from global to local expert ids.

Called by the MoE layer (`rio_sglang/layers/moe.py`) before `fused_moe`, and by the tests and
benchmarks to route their inputs as the model does.
"""

from __future__ import annotations

import torch


def ep_expert_map(
    num_experts: int, ep_rank: int, ep_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Contiguous expert-parallel shard: global expert id -> local id, -1 where not local.

    Rank r owns experts [r * E / ep_size, (r + 1) * E / ep_size). Returns [E] int32.
    """
    if num_experts % ep_size:
        raise ValueError(f"{num_experts} experts do not split over ep_size={ep_size}")
    if not 0 <= ep_rank < ep_size:
        raise ValueError(f"ep_rank={ep_rank} outside [0, {ep_size})")
    local = num_experts // ep_size
    ids = torch.arange(num_experts, device=device) - ep_rank * local  # [E]
    return torch.where((ids >= 0) & (ids < local), ids, -1).to(torch.int32)  # [E]


def route_topk(router_logits: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen3.5-MoE routing: softmax over experts, top-k, renormalise.

    router_logits: [T, E] -> (topk_weights [T, topk] fp32, topk_ids [T, topk] int32).
    """
    probs = torch.softmax(router_logits.float(), dim=-1)  # [T, E]
    weights, ids = torch.topk(probs, topk, dim=-1)  # [T, topk], [T, topk]
    weights = weights / weights.sum(dim=-1, keepdim=True)  # [T, topk]
    return weights, ids.to(torch.int32)

"""Routed-expert MoE: Triton kernel (`fused_moe`) and its fp32 plain-torch reference."""

from . import fp8
from .kernel import MoeConfig, fused_moe, moe_flops_bytes, pick_config
from .ref import ep_expert_map, fused_moe_ref, route_topk

__all__ = [
    "MoeConfig",
    "ep_expert_map",
    "fp8",
    "fused_moe",
    "fused_moe_ref",
    "moe_flops_bytes",
    "pick_config",
    "route_topk",
]

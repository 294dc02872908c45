"""Routed-expert MoE: Triton kernel (`fused_moe`), its fp32 plain-torch reference
(`fused_moe_ref`), the model's routing (`route_topk`, `ep_expert_map`) and FP8 helpers (`fp8`)."""

from .. import lazy_exports
from . import fp8
from .ref import fused_moe_ref
from .routing import ep_expert_map, route_topk

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
__getattr__ = lazy_exports(__name__, {"fused_moe": "kernel", "moe_flops_bytes": "kernel",
                                      "MoeConfig": "configs", "pick_config": "configs"})

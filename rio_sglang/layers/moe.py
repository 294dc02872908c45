"""The sparse MoE block: softmax top-k router, 512 routed experts on our Triton kernel
(`rio_kernels.fused_moe`), and the shared expert scaled by a per-token sigmoid gate.

Layouts (SGLang's MoE groups): `--ep-size` shards experts contiguously over the MoE-EP ranks
(rank r keeps [r E/ep, (r+1) E/ep) and passes the kernel an expert map), the MoE-TP ranks
(tp / ep of them) shard each expert's I. Every rank holds a partial sum of the routed output and
of the TP-sharded shared expert; one all-reduce over the TP group completes both.
"""

from __future__ import annotations

import torch
from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.linear import MergedColumnParallelLinear, ReplicatedLinear, RowParallelLinear

from rio_kernels.fused_moe import ep_expert_map, fused_moe, route_topk
from rio_sglang.layers.experts import ExpertStore, expert_quant

from .tp import check_shape, load_linear, moe_rank_size, tp_rank_size, unpadded


class SparseMoe(ExpertStore):
    """x: [T, H] -> [T, H]. Local experts kept as w13 [E/ep, 2I/mtp, H] (gate rows first) and
    w2 [E/ep, H, I/mtp] (ep = MoE-EP size, mtp = MoE-TP size = tp / ep), bf16 or FP8 with
    scales (`experts.py`); the router, shared expert and its gate are SGLang linears
    built with the checkpoint's quant config (its FP8 linear methods, or bf16 where ignored)."""

    def __init__(self, config, quant_config=None, prefix: str = ""):
        _, tp_size = tp_rank_size()
        (ep_rank, ep_size), moe_tp = moe_rank_size()
        num_experts, h = config.num_experts, config.hidden_size
        i = unpadded(config, "moe_intermediate_size")
        if num_experts % ep_size:
            raise ValueError(f"{num_experts} experts do not split over --ep-size {ep_size}")
        if i % moe_tp[1]:
            raise ValueError(f"moe_intermediate_size {i} does not split over MoE-TP {moe_tp[1]}")
        e_local = num_experts // ep_size
        super().__init__(num_experts, e_local, ep_rank * e_local, h, i, moe_tp,
                         expert_quant(quant_config, i // moe_tp[1], h), torch.get_default_dtype())
        self.tp_size, self.ep_rank, self.ep_size = tp_size, ep_rank, ep_size
        self.topk = config.num_experts_per_tok
        self.gate = ReplicatedLinear(h, num_experts, bias=False, quant_config=quant_config,
                                     prefix=f"{prefix}.gate")
        # Global expert id -> local row or -1 (None without EP: every expert is local).
        emap = ep_expert_map(num_experts, ep_rank, ep_size) if ep_size > 1 else None
        self.register_buffer("expert_map", emap, persistent=False)
        si = unpadded(config, "shared_expert_intermediate_size")
        self.shared_gate_up = MergedColumnParallelLinear(h, [si, si], bias=False,
                                                         quant_config=quant_config,
                                                         prefix=f"{prefix}.shared_expert.gate_up")
        self.shared_down = RowParallelLinear(si, h, bias=False, reduce_results=False,
                                             quant_config=quant_config,
                                             prefix=f"{prefix}.shared_expert.down_proj")
        self.shared_expert_gate = ReplicatedLinear(h, 1, bias=False, quant_config=quant_config,
                                                   prefix=f"{prefix}.shared_expert_gate")
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.gate(x)  # [T, E]
        weights, ids = route_topk(logits, self.topk)  # softmax, top-k, renormalised: [T, topk]
        routed = fused_moe(x, self.w13, self.w2, weights, ids, expert_map=self.expert_map,
                           **self.scales())  # [T, H], this rank's partial sum
        shared = self.shared_down(self.act(self.shared_gate_up(x)[0]))[0]  # [T, H]
        out = routed + torch.sigmoid(self.shared_expert_gate(x)[0]) * shared
        if self.tp_size > 1:
            from sglang.srt.distributed.communication_op import tensor_model_parallel_all_reduce

            out = tensor_model_parallel_all_reduce(out)
        return out

    def load_shared(self, which: str, w: torch.Tensor, name: str, part: str = "weight") -> None:
        """A shared-expert projection's weight or (FP8) scale, through SGLang's loaders."""
        si = self.shared_down.input_size
        if which == "down_proj":
            if part == "weight":
                check_shape(name, w.shape, (self.h, si))
            load_linear(self.shared_down, part, w, name)
            return
        if part == "weight":
            check_shape(name, w.shape, (si, self.h))
        load_linear(self.shared_gate_up, part, w, name, 0 if which == "gate_proj" else 1)

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
from torch import nn

from rio_kernels.fused_moe import ep_expert_map, fused_moe, route_topk

from .tp import check_shape, moe_rank_size, shard_rows, tp_rank_size, unpadded


class SparseMoe(nn.Module):
    """x: [T, H] -> [T, H]. Local experts kept as w13 [E/ep, 2I/mtp, H] (gate rows first) and
    w2 [E/ep, H, I/mtp] (ep = MoE-EP size, mtp = MoE-TP size = tp / ep)."""

    def __init__(self, config, prefix: str = ""):
        super().__init__()
        _, self.tp_size = tp_rank_size()
        (self.ep_rank, self.ep_size), (self.moe_tp_rank, self.moe_tp_size) = moe_rank_size()
        self.e, self.topk = config.num_experts, config.num_experts_per_tok
        if self.e % self.ep_size:
            raise ValueError(f"{self.e} experts do not split over --ep-size {self.ep_size}")
        self.e_local = self.e // self.ep_size
        self.e_start = self.ep_rank * self.e_local
        self.h, self.i = config.hidden_size, unpadded(config, "moe_intermediate_size")
        if self.i % self.moe_tp_size:
            raise ValueError(f"moe_intermediate_size {self.i} does not split over MoE-TP "
                             f"{self.moe_tp_size}")
        self.i_tp = i_tp = self.i // self.moe_tp_size
        self.gate = ReplicatedLinear(self.h, self.e, bias=False, prefix=f"{prefix}.gate")
        dtype = torch.get_default_dtype()
        self.w13 = nn.Parameter(torch.empty(self.e_local, 2 * i_tp, self.h, dtype=dtype),
                                requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(self.e_local, self.h, i_tp, dtype=dtype),
                               requires_grad=False)
        # Global expert id -> local row or -1 (None without EP: every expert is local).
        emap = ep_expert_map(self.e, self.ep_rank, self.ep_size) if self.ep_size > 1 else None
        self.register_buffer("expert_map", emap, persistent=False)
        si = unpadded(config, "shared_expert_intermediate_size")
        self.shared_gate_up = MergedColumnParallelLinear(self.h, [si, si], bias=False,
                                                         prefix=f"{prefix}.shared_expert.gate_up")
        self.shared_down = RowParallelLinear(si, self.h, bias=False, reduce_results=False,
                                             prefix=f"{prefix}.shared_expert.down_proj")
        self.shared_expert_gate = ReplicatedLinear(self.h, 1, bias=False,
                                                   prefix=f"{prefix}.shared_expert_gate")
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.gate(x)  # [T, E]
        weights, ids = route_topk(logits, self.topk)  # softmax, top-k, renormalised: [T, topk]
        routed = fused_moe(x, self.w13, self.w2, weights, ids,
                           expert_map=self.expert_map)  # [T, H], this rank's partial sum
        shared = self.shared_down(self.act(self.shared_gate_up(x)[0]))[0]  # [T, H]
        out = routed + torch.sigmoid(self.shared_expert_gate(x)[0]) * shared
        if self.tp_size > 1:
            from sglang.srt.distributed.communication_op import tensor_model_parallel_all_reduce

            out = tensor_model_parallel_all_reduce(out)
        return out

    # Checkpoint loaders (full tensors in; this rank's experts and I-shard kept).
    def load_expert(self, e: int, which: str, w: torch.Tensor, name: str) -> bool:
        """Copy expert e's projection if this EP rank owns e; False if another rank does."""
        if not 0 <= e < self.e:
            raise KeyError(name)  # an expert this model does not have: unexpected
        if which == "down_proj":
            check_shape(name, w.shape, (self.h, self.i))
        else:
            check_shape(name, w.shape, (self.i, self.h))
        local = e - self.e_start
        if not 0 <= local < self.e_local:
            return False
        i_tp = self.i_tp
        if which == "down_proj":
            self.w2.data[local].copy_(shard_rows(w, 1, self.moe_tp_rank, self.moe_tp_size))
            return True
        rows = slice(0, i_tp) if which == "gate_proj" else slice(i_tp, 2 * i_tp)
        self.w13.data[local, rows].copy_(shard_rows(w, 0, self.moe_tp_rank, self.moe_tp_size))
        return True

    def load_fused(self, which: str, w: torch.Tensor, name: str) -> int:
        """Load a stacked [E, ...] tensor; returns how many expert projections landed here."""
        mine = range(self.e_start, self.e_start + self.e_local)
        if which == "down_proj":
            check_shape(name, w.shape, (self.e, self.h, self.i))
            return sum(self.load_expert(e, "down_proj", w[e], name) for e in mine)
        check_shape(name, w.shape, (self.e, 2 * self.i, self.h))
        n = 0
        for e in mine:
            gate, up = w[e].split(self.i)
            n += self.load_expert(e, "gate_proj", gate, name)
            n += self.load_expert(e, "up_proj", up, name)
        return n

    def load_shared(self, which: str, w: torch.Tensor, name: str) -> None:
        si = self.shared_down.input_size
        if which == "down_proj":
            check_shape(name, w.shape, (self.h, si))
            self.shared_down.weight.weight_loader(self.shared_down.weight, w)
            return
        check_shape(name, w.shape, (si, self.h))
        param = self.shared_gate_up.weight
        param.weight_loader(param, w, 0 if which == "gate_proj" else 1)

"""The sparse MoE block: softmax top-k router, 512 routed experts on our Triton kernel
(`rio_kernels.fused_moe`), and the shared expert scaled by a per-token sigmoid gate."""

from __future__ import annotations

import torch
from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.linear import MergedColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from torch import nn

from rio_kernels.fused_moe import fused_moe, route_topk

from .tp import check_shape, shard_rows, tp_rank_size, unpadded


class SparseMoe(nn.Module):
    """x: [T, H] -> [T, H]. Experts kept as w13 [E, 2I/tp, H] (gate rows first), w2 [E, H, I/tp]."""

    def __init__(self, config, prefix: str = ""):
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank_size()
        self.e, self.topk = config.num_experts, config.num_experts_per_tok
        self.h, self.i = config.hidden_size, unpadded(config, "moe_intermediate_size")
        i_tp = self.i // self.tp_size
        self.gate = ReplicatedLinear(self.h, self.e, bias=False, prefix=f"{prefix}.gate")
        dtype = torch.get_default_dtype()
        self.w13 = nn.Parameter(torch.empty(self.e, 2 * i_tp, self.h, dtype=dtype),
                                requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(self.e, self.h, i_tp, dtype=dtype), requires_grad=False)
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
        routed = fused_moe(x, self.w13, self.w2, weights, ids)  # [T, H]
        shared = self.shared_down(self.act(self.shared_gate_up(x)[0]))[0]  # [T, H]
        out = routed + torch.sigmoid(self.shared_expert_gate(x)[0]) * shared
        if self.tp_size > 1:
            from sglang.srt.distributed.communication_op import tensor_model_parallel_all_reduce

            out = tensor_model_parallel_all_reduce(out)
        return out

    # Checkpoint loaders (full tensors in; this rank's I-shard kept).
    def load_expert(self, e: int, which: str, w: torch.Tensor, name: str) -> None:
        if not 0 <= e < self.e:
            raise KeyError(name)  # an expert this model does not have: unexpected
        i_tp = self.i // self.tp_size
        if which == "down_proj":
            check_shape(name, w.shape, (self.h, self.i))
            self.w2.data[e].copy_(shard_rows(w, 1, self.tp_rank, self.tp_size))
            return
        check_shape(name, w.shape, (self.i, self.h))
        rows = slice(0, i_tp) if which == "gate_proj" else slice(i_tp, 2 * i_tp)
        self.w13.data[e, rows].copy_(shard_rows(w, 0, self.tp_rank, self.tp_size))

    def load_fused(self, which: str, w: torch.Tensor, name: str) -> None:
        if which == "down_proj":
            check_shape(name, w.shape, (self.e, self.h, self.i))
            for e in range(self.e):
                self.load_expert(e, "down_proj", w[e], name)
            return
        check_shape(name, w.shape, (self.e, 2 * self.i, self.h))
        for e in range(self.e):
            gate, up = w[e].split(self.i)
            self.load_expert(e, "gate_proj", gate, name)
            self.load_expert(e, "up_proj", up, name)

    def load_shared(self, which: str, w: torch.Tensor, name: str) -> None:
        si = self.shared_down.input_size
        if which == "down_proj":
            check_shape(name, w.shape, (self.h, si))
            self.shared_down.weight.weight_loader(self.shared_down.weight, w)
            return
        check_shape(name, w.shape, (si, self.h))
        param = self.shared_gate_up.weight
        param.weight_loader(param, w, 0 if which == "gate_proj" else 1)

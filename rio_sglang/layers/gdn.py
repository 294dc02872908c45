"""Gated DeltaNet mixer: our projections and gated norm around SGLang's RadixLinearAttention.

The recurrent core (conv state, fp32 SSM state, chunked/recurrent kernels) is SGLang's hybrid
linear-attention backend; this module owns the weights and their loading.
"""

from __future__ import annotations

import torch
from sglang.kernels.ops.attention.fla.layernorm_gated import RMSNorm as RMSNormGated
from sglang.srt.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    RowParallelLinear,
)
from sglang.srt.layers.radix_linear_attention import RadixLinearAttention
from torch import nn

from .tp import check_shape, copy_into, load_linear, scale_rows, shard_rows, tp_rank_size


class GatedDeltaNet(nn.Module):
    """x: [T, H] -> [T, H]. in_proj_qkv holds [q (nk*dk) | k (nk*dk) | v (nv*dv)]."""

    def __init__(self, config, layer_id: int, quant_config=None, prefix: str = ""):
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank_size()
        self.nk, self.nv = config.linear_num_key_heads, config.linear_num_value_heads
        self.dk, self.dv = config.linear_key_head_dim, config.linear_value_head_dim
        self.key_dim, self.value_dim = self.nk * self.dk, self.nv * self.dv
        self.conv_k = config.linear_conv_kernel_dim
        nk_tp, nv_tp = self.nk // self.tp_size, self.nv // self.tp_size
        h = config.hidden_size
        self.in_proj_qkv = MergedColumnParallelLinear(
            h, [self.key_dim, self.key_dim, self.value_dim], bias=False,
            quant_config=quant_config, prefix=f"{prefix}.in_proj_qkv")
        self.in_proj_z = ColumnParallelLinear(h, self.value_dim, bias=False,
                                              quant_config=quant_config,
                                              prefix=f"{prefix}.in_proj_z")
        self.in_proj_b = ColumnParallelLinear(h, self.nv, bias=False, quant_config=quant_config,
                                              prefix=f"{prefix}.in_proj_b")
        self.in_proj_a = ColumnParallelLinear(h, self.nv, bias=False, quant_config=quant_config,
                                              prefix=f"{prefix}.in_proj_a")
        conv_dim_tp = (2 * self.key_dim + self.value_dim) // self.tp_size
        self.conv_weight = nn.Parameter(torch.empty(conv_dim_tp, self.conv_k), requires_grad=False)
        self.A_log = nn.Parameter(torch.empty(nv_tp, dtype=torch.float32), requires_grad=False)
        self.dt_bias = nn.Parameter(torch.empty(nv_tp), requires_grad=False)
        self.attn = RadixLinearAttention(
            layer_id=layer_id, num_q_heads=nk_tp, num_k_heads=nk_tp, num_v_heads=nv_tp,
            head_q_dim=self.dk, head_k_dim=self.dk, head_v_dim=self.dv,
            conv_weights=self.conv_weight, bias=None, activation=config.hidden_act,
            A_log=self.A_log, dt_bias=self.dt_bias)
        # Qwen3.5's gated output norm: w * rms(o) * silu(z), per v head (not zero-centred).
        self.norm = RMSNormGated(self.dv, eps=config.rms_norm_eps, group_size=None,
                                 norm_before_gate=True, dtype=torch.get_default_dtype())
        self.out_proj = RowParallelLinear(self.value_dim, h, bias=False, input_is_parallel=True,
                                          reduce_results=True, quant_config=quant_config,
                                          prefix=f"{prefix}.out_proj")

    def forward(self, x: torch.Tensor, forward_batch) -> torch.Tensor:
        mixed_qkv, _ = self.in_proj_qkv(x)  # [T, conv_dim/tp]
        z, _ = self.in_proj_z(x)  # [T, nv/tp * dv]
        b, _ = self.in_proj_b(x)  # [T, nv/tp]
        a, _ = self.in_proj_a(x)  # [T, nv/tp]
        core = self.attn(forward_batch, mixed_qkv=mixed_qkv, a=a.contiguous(), b=b.contiguous())
        rows = x.shape[0] * (self.nv // self.tp_size)
        core = core.reshape(-1, self.dv)[:rows]
        if core.shape[0] < rows:  # the backend may return fewer rows than tokens (padding)
            core = torch.cat([core, core.new_zeros(rows - core.shape[0], self.dv)])
        t = x.shape[0]
        out = self.norm(core, z.reshape(-1, self.dv)).reshape(t, -1)  # [T, nv/tp * dv]
        return self.out_proj(out)[0]

    # Checkpoint loaders: called by rio_sglang.weights with the full (unsharded) tensor.
    def load_in_proj_qkv(self, w: torch.Tensor, name: str, part: str = "weight") -> None:
        """[q | k | v] rows: the weight or its FP8 scale, split into SGLang's three shards."""
        dims = [self.key_dim, self.key_dim, self.value_dim]
        if part == "weight":
            check_shape(name, w.shape, (sum(dims), self.in_proj_qkv.input_size))
        rows = scale_rows(self.in_proj_qkv, part, dims)
        if w.shape[0] != sum(rows):
            raise ValueError(f"{name}: checkpoint shape {tuple(w.shape)}, {sum(rows)} rows expected")
        for shard_id, piece in enumerate(w.split(rows)):
            load_linear(self.in_proj_qkv, part, piece, name, shard_id)

    def load_conv1d(self, w: torch.Tensor, name: str) -> None:
        check_shape(name, w.shape, (2 * self.key_dim + self.value_dim, 1, self.conv_k))
        parts = w[:, 0].split([self.key_dim, self.key_dim, self.value_dim])
        local = [shard_rows(p, 0, self.tp_rank, self.tp_size) for p in parts]
        copy_into(self.conv_weight, torch.cat(local), name)

    def load_per_head(self, param: nn.Parameter, w: torch.Tensor, name: str) -> None:
        check_shape(name, w.shape, (self.nv,))
        copy_into(param, shard_rows(w, 0, self.tp_rank, self.tp_size), name)

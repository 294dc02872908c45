"""Gated full attention: q/k zero-centred RMSNorm, partial interleaved M-RoPE, sigmoid output gate.

Attention itself is SGLang's RadixAttention (FlashInfer on GPU by default, torch_native on CPU).
"""

from __future__ import annotations

import torch
from sglang.srt.layers.layernorm import GemmaRMSNorm
from sglang.srt.layers.linear import QKVParallelLinear, RowParallelLinear
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.layers.rotary_embedding import get_rope
from sglang.srt.utils.hf_transformers_utils import get_rope_config
from torch import nn

from .tp import check_shape, load_linear, tp_rank_size


class GatedAttention(nn.Module):
    """x: [T, H] -> [T, H]; q_proj holds [q_h | gate_h] per head (2 * D rows per head)."""

    def __init__(self, config, layer_id: int, quant_config=None, prefix: str = ""):
        super().__init__()
        _, tp = tp_rank_size()
        self.total_heads, self.total_kv = config.num_attention_heads, config.num_key_value_heads
        self.heads = self.total_heads // tp
        self.kv_heads = max(1, self.total_kv // tp)
        self.d = config.head_dim
        h = config.hidden_size
        theta, rope_scaling = get_rope_config(config)
        self.rotary_emb = get_rope(
            head_size=self.d, rotary_dim=self.d, max_position=config.max_position_embeddings,
            rope_scaling=rope_scaling or None, base=theta,
            partial_rotary_factor=getattr(config, "partial_rotary_factor", 0.25),
            is_neox_style=True, dtype=torch.get_default_dtype())
        # The gate rides in q_proj: 2 * heads "heads" of D, each head's [q | gate] adjacent.
        self.qkv_proj = QKVParallelLinear(h, self.d, 2 * self.total_heads, self.total_kv,
                                          bias=False, quant_config=quant_config,
                                          prefix=f"{prefix}.qkv_proj")
        self.o_proj = RowParallelLinear(self.total_heads * self.d, h, bias=False,
                                        reduce_results=True, quant_config=quant_config,
                                        prefix=f"{prefix}.o_proj")
        self.q_norm = GemmaRMSNorm(self.d, eps=config.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(self.d, eps=config.rms_norm_eps)
        self.attn = RadixAttention(self.heads, self.d, self.d**-0.5, num_kv_heads=self.kv_heads,
                                   layer_id=layer_id, prefix=f"{prefix}.attn")

    def forward(self, positions: torch.Tensor, x: torch.Tensor, forward_batch) -> torch.Tensor:
        t = x.shape[0]
        qkv, _ = self.qkv_proj(x)
        q_gate, k, v = qkv.split([2 * self.heads * self.d, self.kv_heads * self.d,
                                  self.kv_heads * self.d], dim=-1)
        q, gate = q_gate.view(t, self.heads, 2 * self.d).chunk(2, dim=-1)  # [T, nh, D] each
        q = self.q_norm(q.reshape(-1, self.d)).view(t, -1)
        k = self.k_norm(k.reshape(-1, self.d)).view(t, -1)
        q, k = self.rotary_emb(positions, q, k)
        out = self.attn(q, k, v, forward_batch)  # [T, nh * D]
        out = out * torch.sigmoid(gate.reshape(t, -1))
        return self.o_proj(out)[0]

    def load_qkv(self, which: str, w: torch.Tensor, name: str, part: str = "weight") -> None:
        """q (with its gate), k or v: the weight or its FP8 scale (SGLang's loader shards it)."""
        if part == "weight":
            rows = {"q": 2 * self.total_heads, "k": self.total_kv, "v": self.total_kv}[which]
            check_shape(name, w.shape, (rows * self.d, self.qkv_proj.input_size))
        load_linear(self.qkv_proj, part, w, name, which)

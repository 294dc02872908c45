"""Decoder layers (mixer by `config.layer_types`, then the MoE block) and the text model.

`RioTextModel.embed` is the one place token ids become input embeddings: the reasoning runtime
replaces rows there (latent steps feed a probability mixture of embeddings instead of a token).
"""

from __future__ import annotations

import torch
from sglang.srt.layers.layernorm import GemmaRMSNorm
from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding
from torch import nn

from .attention import GatedAttention
from .gdn import GatedDeltaNet
from .moe import SparseMoe


def layer_types(config) -> list[str]:
    """Per-layer mixer, derived as SGLang's hybrid state pool derives it (full_attention_interval);
    an explicit `layer_types` that disagrees is refused rather than served wrongly."""
    interval = config.full_attention_interval
    derived = ["full_attention" if (i + 1) % interval == 0 else "linear_attention"
               for i in range(config.num_hidden_layers)]
    explicit = getattr(config, "layer_types", None)
    if explicit is not None and list(explicit) != derived:
        raise ValueError(f"config layer_types {explicit} disagree with full_attention_interval "
                         f"{interval}, which SGLang's state pool follows")
    return derived


class DecoderLayer(nn.Module):
    def __init__(self, config, layer_id: int, prefix: str):
        super().__init__()
        self.layer_type = layer_types(config)[layer_id]
        if self.layer_type == "full_attention":
            self.self_attn = GatedAttention(config, layer_id, f"{prefix}.self_attn")
        elif self.layer_type == "linear_attention":
            self.linear_attn = GatedDeltaNet(config, layer_id, f"{prefix}.linear_attn")
        else:
            raise ValueError(f"layer {layer_id}: unknown layer type {self.layer_type!r}")
        self.mlp = SparseMoe(config, f"{prefix}.mlp")
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, positions, h, residual, forward_batch):
        if residual is None:
            residual, h = h, self.input_layernorm(h)
        else:
            h, residual = self.input_layernorm(h, residual)
        if self.layer_type == "full_attention":
            h = self.self_attn(positions, h, forward_batch)
        else:
            h = self.linear_attn(h, forward_batch)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class RioTextModel(nn.Module):
    """input_ids [T] (or input_embeds [T, H]) -> final hidden states [T, H]."""

    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        if quant_config is not None:
            raise NotImplementedError("rio-sglang serves the BF16 checkpoint: no quantization yet")
        self.config = config
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, f"{prefix}.layers.{i}") for i in range(config.num_hidden_layers))
        self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.start_layer, self.end_layer = 0, config.num_hidden_layers
        # Set by the reasoning runtime: (input_ids, embeds, forward_batch) -> embeds.
        self.embed_override = None

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def embed(self, input_ids, input_embeds, forward_batch) -> torch.Tensor:
        h = self.embed_tokens(input_ids) if input_embeds is None else input_embeds
        if self.embed_override is not None:
            h = self.embed_override(input_ids, h, forward_batch)
        return h

    def forward(self, input_ids, positions, forward_batch, input_embeds=None,
                pp_proxy_tensors=None, input_deepstack_embeds=None) -> torch.Tensor:
        if input_deepstack_embeds is not None:
            raise NotImplementedError("Qwen3.5's vision tower has no deepstack features")
        if pp_proxy_tensors is not None:
            raise NotImplementedError("pipeline parallelism is not supported by rio-sglang yet")
        h = self.embed(input_ids, input_embeds, forward_batch)
        residual = None
        for layer in self.layers:
            h, residual = layer(positions, h, residual, forward_batch)
        h, _ = self.norm(h, residual)
        return h

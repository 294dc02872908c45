"""Decoder layers (mixer by `config.layer_types`, then the MoE block) and the text model.

Token ids become input embeddings in `embed_tokens` (SGLang's VocabParallelEmbedding); the
reasoning runtime replaces latent rows there through a forward hook, as on any SGLang model
(`rio_sglang/runtime/attach.py`).

Pipeline parallel: each stage builds only its layers (SGLang's `make_pp_layers`, the same split
its hybrid state pool uses); the first stage owns the embedding, the last the final norm, and
stages hand `hidden_states` + `residual` to each other as `PPProxyTensors`.
"""

from __future__ import annotations

from sglang.srt.layers.layernorm import GemmaRMSNorm
from sglang.srt.layers.utils import PPMissingLayer
from sglang.srt.layers.vocab_parallel_embedding import VocabParallelEmbedding
from sglang.srt.model_executor.forward_batch_info import PPProxyTensors
from sglang.srt.runtime_context import get_parallel
from sglang.srt.utils.common import make_pp_layers
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
    def __init__(self, config, layer_id: int, prefix: str, quant_config=None):
        super().__init__()
        self.layer_type = layer_types(config)[layer_id]
        if self.layer_type == "full_attention":
            self.self_attn = GatedAttention(config, layer_id, quant_config, f"{prefix}.self_attn")
        elif self.layer_type == "linear_attention":
            self.linear_attn = GatedDeltaNet(config, layer_id, quant_config,
                                             f"{prefix}.linear_attn")
        else:
            raise ValueError(f"layer {layer_id}: unknown layer type {self.layer_type!r}")
        self.mlp = SparseMoe(config, quant_config, f"{prefix}.mlp")
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
    """input_ids [T] (or input_embeds [T, H]) -> final hidden states [T, H]. quant_config:
    SGLang's, from the checkpoint (FP8, `rio_sglang.layers.experts`) or `--quantization fp8`."""

    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        self.config = config
        self.pp_group = get_parallel().pp_group  # SGLang's multimodal embed routine reads it
        first, last = self.pp_group.is_first_rank, self.pp_group.is_last_rank
        self.embed_tokens = (VocabParallelEmbedding(config.vocab_size, config.hidden_size)
                             if first else PPMissingLayer())
        self.layers, self.start_layer, self.end_layer = make_pp_layers(
            config.num_hidden_layers,
            lambda idx, prefix: DecoderLayer(config, idx, prefix, quant_config),
            prefix=f"{prefix}.layers")
        self.norm = (GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if last
                     else PPMissingLayer())

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def owns_layer(self, layer_id: int) -> bool:
        return self.start_layer <= layer_id < self.end_layer

    def forward(self, input_ids, positions, forward_batch, input_embeds=None,
                pp_proxy_tensors=None, input_deepstack_embeds=None):
        """[T, H] final hidden states on the last stage; PPProxyTensors on the others."""
        if input_deepstack_embeds is not None:
            raise NotImplementedError("Qwen3.5's vision tower has no deepstack features")
        if self.pp_group.is_first_rank:
            h = self.embed_tokens(input_ids) if input_embeds is None else input_embeds
            residual = None
        else:
            h, residual = pp_proxy_tensors["hidden_states"], pp_proxy_tensors["residual"]
        for layer in self.layers[self.start_layer:self.end_layer]:
            h, residual = layer(positions, h, residual, forward_batch)
        if not self.pp_group.is_last_rank:
            return PPProxyTensors({"hidden_states": h, "residual": residual})
        h, _ = self.norm(h, residual)
        return h

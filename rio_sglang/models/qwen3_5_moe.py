"""Rio 3.5 Open / Qwen3.5-MoE served by SGLang with our layers, our MoE kernels, strict loading.

Registered through SGLANG_EXTERNAL_MODEL_PACKAGE=rio_sglang.models; SGLang builds it for any
checkpoint whose `architectures[0]` is `Qwen3_5MoeForConditionalGeneration`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from sglang.srt.distributed.parallel_state import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
)
from sglang.srt.models.qwen3_vl import Qwen3VLForConditionalGeneration

from rio_sglang.checkpoint import verify_checkpoint
from rio_sglang.layers.decoder import RioTextModel
from rio_sglang.runtime.engine import ReasoningRuntime
from rio_sglang.server import EXPERTS_MARK, LAYOUT_MARK, SERVING_MARK
from rio_sglang.weights import load_checkpoint

log = logging.getLogger(__name__)


# The class name must equal the checkpoint's architectures[0]: SGLang keys hybrid prefix
# caching, multimodal detection, the processor and per-model defaults on it.
class Qwen3_5MoeForConditionalGeneration(Qwen3VLForConditionalGeneration):
    """Vision tower and multimodal embedding from SGLang's Qwen3-VL wrapper; the language model
    (Gated DeltaNet + gated attention + our MoE) is `RioTextModel`."""

    # Our modules carry the checkpoint's own names (`model.language_model.layers...`), so a
    # quant config's ignore list applies as written: no Qwen3-VL renaming of it.
    hf_to_sglang_mapper = None

    def __init__(self, config, quant_config=None, prefix: str = ""):
        # Qwen3.5's vision tower has no deepstack mergers (transformers' config has no such
        # field); SGLang's Qwen3-VL vision config defaults to three, which would stay random.
        if getattr(config, "vision_config", None) is not None:
            config.vision_config.deepstack_visual_indexes = []
        model_path = getattr(config, "_name_or_path", "")  # the text config below has none
        super().__init__(config, quant_config, prefix, language_model_cls=RioTextModel)
        rope = getattr(self.config, "rope_parameters", None) or self.config.rope_scaling or {}
        self.is_mrope_enabled = not self.language_model_only and "mrope_section" in rope
        self.tp_size = get_tensor_model_parallel_world_size()
        self.reasoning = None  # ReasoningRuntime: `init_reasoning`, once the slot pool exists
        # Latent steps mix rows of the whole embedding table, where the logits are: on the last
        # stage. Under TP each rank holds a vocab shard and under PP the last stage holds none,
        # so they keep a full copy: V x H in the model dtype (~1.9 GiB for Rio), allocated here
        # so that SGLang's memory profile counts it, filled from the checkpoint by the loader (or
        # from the shards on first use).
        pp = self.pp_group
        whole_copy = pp.is_last_rank and (self.tp_size > 1 or pp.world_size > 1)
        self.register_buffer("latent_embed", torch.empty(
            self.config.vocab_size, self.config.hidden_size) if whole_copy else None,
            persistent=False)
        self.latent_embed_ready = False
        self.model_path = model_path
        log.warning("%s: %s.%s (%d layers, %d experts top-%d)", SERVING_MARK,
                    type(self).__module__, type(self).__qualname__, self.config.num_hidden_layers,
                    self.config.num_experts, self.config.num_experts_per_tok)
        log.warning("%s", self.layout())
        mlp = self.model.layers[self.model.start_layer].mlp
        log.warning("%s: %s, %d bytes per layer on this rank", EXPERTS_MARK, mlp.describe(),
                    mlp.expert_bytes())

    def layout(self) -> str:
        """This rank's share of the model, logged once per rank (tests read it back)."""
        text = self.model
        mlp = text.layers[text.start_layer].mlp
        return (f"{LAYOUT_MARK}: tp {get_tensor_model_parallel_rank()}/{self.tp_size} "
                f"pp {text.pp_group.rank_in_group}/{text.pp_group.world_size} "
                f"layers {text.start_layer}-{text.end_layer} "
                f"ep {mlp.ep_rank}/{mlp.ep_size} experts {mlp.e_start}-{mlp.e_start + mlp.e_local} "
                f"moe_tp {mlp.moe_tp_rank}/{mlp.moe_tp_size} expert_inter {mlp.w2.shape[2]}")

    def keep_latent_embed(self, full: torch.Tensor) -> None:
        """The loader hands over the checkpoint's whole embedding table [V, H] (kept where the
        model has a `latent_embed`: TP > 1, or the last of several PP stages)."""
        if self.latent_embed is not None:
            if tuple(full.shape) != tuple(self.latent_embed.shape):
                raise ValueError(f"shape {tuple(full.shape)}, expected "
                                   f"{tuple(self.latent_embed.shape)}")
            self.latent_embed.copy_(full)
            self.latent_embed_ready = True

    def latent_table(self) -> torch.Tensor:
        """[V(+pad), H] embedding rows for latent mixtures: the whole table (last stage)."""
        if self.latent_embed is None:
            return self.model.embed_tokens.weight
        if not self.latent_embed_ready:  # --load-format dummy: no checkpoint table was handed
            if self.pp_group.is_first_rank:  # gather the vocab shards
                from sglang.srt.distributed.communication_op import (
                    tensor_model_parallel_all_gather,
                )

                full = tensor_model_parallel_all_gather(self.model.embed_tokens.weight.data, dim=0)
                self.latent_embed.copy_(full[: self.latent_embed.shape[0]])
            else:  # the table lives on the first stage: dummy rows, as the weights are
                log.warning("rio-sglang: dummy weights, random embedding rows for latent steps")
                self.latent_embed.normal_(0.0, 0.02)
            self.latent_embed_ready = True
        return self.latent_embed

    def init_reasoning(self, num_slots: int) -> None:
        """Per-slot reasoning state on this rank, and the embedding override that feeds latent
        slots their next input (SGLang calls it through our hook before capturing graphs)."""
        weight = self.model.layers[self.model.start_layer].input_layernorm.weight  # model dtype
        self.reasoning = ReasoningRuntime(
            num_slots, self.config.vocab_size, self.config.hidden_size, self.model_path,
            weight.device, weight.dtype)
        self.model.embed_override = self.reasoning.override_embeds

    def load_weights(self, weights) -> None:
        path = self.model_path
        if path and Path(path).is_dir():
            # Every shard present and sized as its header says, before a weight is read.
            log.warning("rio-sglang serving %s", verify_checkpoint(path).describe())
        n = load_checkpoint(self, weights)
        log.warning("rio-sglang loaded %d checkpoint tensors strictly", n)


EntryClass = [Qwen3_5MoeForConditionalGeneration]

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
from rio_sglang.logmarks import EXPERTS_MARK, LAYOUT_MARK, SERVING_MARK
from rio_sglang.runtime.latent import LatentTable
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
        # SwiReasoning attaches to any model (runtime/attach.py); under pipeline parallelism
        # it mixes these rows, which the loader fills on a last stage without the embedding.
        self.latent = LatentTable(self.config, self.pp_group, get_tensor_model_parallel_rank(),
                                  self.tp_size, model_path)
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
        """The loader hands over the checkpoint's whole embedding table [V, H]."""
        self.latent.keep(full)

    def load_weights(self, weights) -> None:
        path = self.model_path
        if path and Path(path).is_dir():
            # Every shard present and sized as its header says, before a weight is read.
            log.warning("rio-sglang serving %s", verify_checkpoint(path).describe())
        n = load_checkpoint(self, weights)
        log.warning("rio-sglang loaded %d checkpoint tensors strictly", n)


EntryClass = [Qwen3_5MoeForConditionalGeneration]

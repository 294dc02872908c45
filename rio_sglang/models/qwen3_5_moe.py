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
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.tokens import resolve_tokens
from rio_sglang.runtime.step import ReasoningRuntime
from rio_sglang.logmarks import EXPERTS_MARK, LAYOUT_MARK, REASONING_MARK, SERVING_MARK
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
        # Latent steps mix embedding rows where the logits are: on the last stage. Each TP rank
        # mixes the vocab shard it embeds with (no copy); a last stage that is not also the
        # first holds no embedding, so it keeps a copy of its TP rank's vocab rows
        # (V/tp x H in the model dtype), allocated here so that SGLang's memory profile counts
        # it, filled by the loader from the checkpoint's table.
        pp = self.pp_group
        self.mix_range = _even_shard(self.config.vocab_size, get_tensor_model_parallel_rank(),
                                     self.tp_size)
        copy = pp.is_last_rank and not pp.is_first_rank
        self.register_buffer("latent_embed", torch.empty(
            self.mix_range[1], self.config.hidden_size) if copy else None, persistent=False)
        self.register_buffer("latent_special", torch.empty(3, self.config.hidden_size)
                             if copy else None, persistent=False)
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
        """The loader hands over the checkpoint's whole embedding table [V, H]; a last stage
        that is not the first keeps its TP rank's vocab rows and the three special rows."""
        if self.latent_embed is None:
            return
        if tuple(full.shape) != (self.config.vocab_size, self.config.hidden_size):
            raise ValueError(f"shape {tuple(full.shape)}, expected "
                             f"{(self.config.vocab_size, self.config.hidden_size)}")
        start, length = self.mix_range
        self.latent_embed.copy_(full[start:start + length])
        ids = DeviceStep.special_rows(self._tokens())
        self.latent_special.copy_(full[torch.tensor(ids)])
        self.latent_embed_ready = True

    def _tokens(self):
        from transformers import AutoTokenizer

        return resolve_tokens(AutoTokenizer.from_pretrained(self.model_path))

    def _mix_table(self, tokens) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        """(table [>= v_len, H], v_start, v_len, special [3, H]) for this rank's mixtures."""
        ids = DeviceStep.special_rows(tokens)
        if self.pp_group.is_first_rank:
            emb = self.model.embed_tokens
            v_start = emb.shard_indices.org_vocab_start_index
            v_len = emb.shard_indices.org_vocab_end_index - v_start
            table = emb.weight.data
            special = torch.zeros(3, table.shape[1], dtype=table.dtype, device=table.device)
            for i, tok in enumerate(ids):  # each special row from the rank that holds it
                if v_start <= tok < v_start + v_len:
                    special[i] = table[tok - v_start]
            if self.tp_size > 1:
                from sglang.srt.distributed.communication_op import (
                    tensor_model_parallel_all_reduce,
                )

                special = tensor_model_parallel_all_reduce(special)
            return table, v_start, v_len, special
        v_start, v_len = self.mix_range
        if not self.latent_embed_ready:  # --load-format dummy: random rows, as the weights are
            log.warning("rio-sglang: dummy weights, random embedding rows for latent steps")
            self.latent_embed.normal_(0.0, 0.02)
            self.latent_special.normal_(0.0, 0.02)
        return self.latent_embed, v_start, v_len, self.latent_special

    def init_reasoning(self, num_slots: int) -> None:
        """Per-slot reasoning state on this rank, and the embedding override that feeds latent
        slots their next input (SGLang calls it through our hook before capturing graphs)."""
        tokens = self._tokens()
        table, v_start, v_len, special = self._mix_table(tokens)
        all_reduce = None
        if self.tp_size > 1:
            from sglang.srt.distributed.communication_op import tensor_model_parallel_all_reduce

            all_reduce = tensor_model_parallel_all_reduce
        step = DeviceStep(num_slots, tokens, self.config.vocab_size, table, v_start, v_len,
                          special, all_reduce)
        pp = self.pp_group
        self.reasoning = ReasoningRuntime(step, relay_to_first_stage=pp.world_size > 1)
        self.model.embed_override = self.reasoning.override_embeds
        copy = 0 if self.latent_embed is None else (
            self.latent_embed.numel() * self.latent_embed.element_size())
        buffers = step.buffer_bytes()
        log.warning(
            "%s: %d slots; mixture rows: vocab [%d, %d) of %d, %s; reasoning buffers %.2f MiB "
            "(%s)", REASONING_MARK, num_slots, v_start, v_start + v_len, self.config.vocab_size,
            f"a copy of {copy / 2**20:.2f} MiB" if copy else "the embedding shard itself (no copy)",
            sum(buffers.values()) / 2**20,
            ", ".join(f"{k} {v / 2**20:.2f}" for k, v in buffers.items()))

    def load_weights(self, weights) -> None:
        path = self.model_path
        if path and Path(path).is_dir():
            # Every shard present and sized as its header says, before a weight is read.
            log.warning("rio-sglang serving %s", verify_checkpoint(path).describe())
        n = load_checkpoint(self, weights)
        log.warning("rio-sglang loaded %d checkpoint tensors strictly", n)


def _even_shard(vocab: int, rank: int, size: int) -> tuple[int, int]:
    """(first vocab id, rows) of this TP rank's share of a last stage's mixture rows."""
    per = -(-vocab // size)
    start = min(rank * per, vocab)
    return start, min(per, vocab - start)


EntryClass = [Qwen3_5MoeForConditionalGeneration]

"""The embedding rows latent steps mix on one rank, and the reasoning runtime built over them.

Our model class owns one `LatentTable` (a buffer-only submodule, so that SGLang's memory
profile counts its copy) and calls it: the loader hands it the checkpoint's embedding table
(`keep`), `hooks.py::after_memory_pool` has the model build its runtime (`runtime`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from rio_sglang.logmarks import REASONING_MARK
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.tokens import resolve_tokens
from rio_sglang.runtime.step import ReasoningRuntime

log = logging.getLogger(__name__)


class LatentTable(nn.Module):
    """Latent steps mix embedding rows where the logits are: on the last stage. Each TP rank
    mixes the vocab shard it embeds with (no copy); a last stage that is not also the first
    holds no embedding, so it keeps a copy of its TP rank's vocab rows (V/tp x H in the model
    dtype) and of the three special rows, allocated with the model, filled by the loader."""

    def __init__(self, config, pp_group, tp_rank: int, tp_size: int, model_path: str):
        super().__init__()
        self.vocab_size, self.hidden_size = config.vocab_size, config.hidden_size
        self.pp_group, self.tp_size, self.model_path = pp_group, tp_size, model_path
        self.mix_range = even_shard(self.vocab_size, tp_rank, tp_size)
        copy = pp_group.is_last_rank and not pp_group.is_first_rank
        self.register_buffer("embed", torch.empty(self.mix_range[1], self.hidden_size)
                             if copy else None, persistent=False)
        self.register_buffer("special", torch.empty(3, self.hidden_size) if copy else None,
                             persistent=False)
        self.ready = False

    def keep(self, full: torch.Tensor) -> None:
        """full: [V, H] the checkpoint's whole embedding table; a last stage that is not the
        first keeps its TP rank's vocab rows and the three special rows."""
        if self.embed is None:
            return
        if tuple(full.shape) != (self.vocab_size, self.hidden_size):
            raise ValueError(f"shape {tuple(full.shape)}, expected "
                             f"{(self.vocab_size, self.hidden_size)}")
        start, length = self.mix_range
        self.embed.copy_(full[start:start + length])
        ids = DeviceStep.special_rows(self._tokens())
        self.special.copy_(full[torch.tensor(ids)])
        self.ready = True

    def _tokens(self):
        from transformers import AutoTokenizer

        return resolve_tokens(AutoTokenizer.from_pretrained(self.model_path))

    def _mix_table(self, embed_tokens, tokens) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        """(table [>= v_len, H], v_start, v_len, special [3, H]) for this rank's mixtures;
        `embed_tokens`: the first stage's vocab-parallel embedding."""
        ids = DeviceStep.special_rows(tokens)
        if self.pp_group.is_first_rank:
            v_start = embed_tokens.shard_indices.org_vocab_start_index
            v_len = embed_tokens.shard_indices.org_vocab_end_index - v_start
            table = embed_tokens.weight.data
            special = torch.zeros(3, table.shape[1], dtype=table.dtype, device=table.device)
            for i, tok in enumerate(ids):  # each special row from the rank that holds it
                if v_start <= tok < v_start + v_len:
                    special[i] = table[tok - v_start]
            if self.tp_size > 1:
                special = _all_reduce()(special)
            return table, v_start, v_len, special
        v_start, v_len = self.mix_range
        if not self.ready:  # --load-format dummy: random rows, as the weights are
            log.warning("rio-sglang: dummy weights, random embedding rows for latent steps")
            self.embed.normal_(0.0, 0.02)
            self.special.normal_(0.0, 0.02)
        return self.embed, v_start, v_len, self.special

    def runtime(self, num_slots: int, embed_tokens) -> ReasoningRuntime:
        """Per-slot reasoning state on this rank over its mixture rows (logged once)."""
        tokens = self._tokens()
        table, v_start, v_len, special = self._mix_table(embed_tokens, tokens)
        all_reduce = _all_reduce() if self.tp_size > 1 else None
        step = DeviceStep(num_slots, tokens, self.vocab_size, table, v_start, v_len, special,
                          all_reduce)
        runtime = ReasoningRuntime(step, relay_to_first_stage=self.pp_group.world_size > 1)
        copy = 0 if self.embed is None else self.embed.numel() * self.embed.element_size()
        buffers = step.buffer_bytes()
        log.warning(
            "%s: %d slots; mixture rows: vocab [%d, %d) of %d, %s; reasoning buffers %.2f MiB "
            "(%s)", REASONING_MARK, num_slots, v_start, v_start + v_len, self.vocab_size,
            f"a copy of {copy / 2**20:.2f} MiB" if copy else "the embedding shard itself (no copy)",
            sum(buffers.values()) / 2**20,
            ", ".join(f"{k} {v / 2**20:.2f}" for k, v in buffers.items()))
        return runtime


def _all_reduce():
    from sglang.srt.distributed.communication_op import tensor_model_parallel_all_reduce

    return tensor_model_parallel_all_reduce


def even_shard(vocab: int, rank: int, size: int) -> tuple[int, int]:
    """(first vocab id, rows) of this TP rank's share of a last stage's mixture rows."""
    per = -(-vocab // size)
    start = min(rank * per, vocab)
    return start, min(per, vocab - start)

"""Rio's mixture rows under pipeline parallelism: a last stage without the embedding keeps a copy.

Our model class owns one `LatentTable` (a buffer-only submodule, so that SGLang's memory
profile counts its copy): the loader hands it the checkpoint's embedding table (`keep`), and
`attach.py::attach` asks it for this rank's rows (`rows`). A stock SGLang model has none: its
latent steps mix its own embedding shard, and pipeline parallelism is refused there.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.tokens import ReasoningTokens, family_tokens

log = logging.getLogger(__name__)


class LatentTable(nn.Module):
    """Latent steps mix embedding rows where the logits are: on the last stage. Each TP rank
    mixes the vocab shard it embeds with (no copy); a last stage that is not also the first
    holds no embedding, so it keeps a copy of its TP rank's vocab rows (V/tp x H in the model
    dtype) and of the three special rows, allocated with the model, filled by the loader."""

    def __init__(self, config, pp_group, tp_rank: int, tp_size: int, model_path: str):
        super().__init__()
        self.vocab_size, self.hidden_size = config.vocab_size, config.hidden_size
        self.model_type = getattr(config, "model_type", "")
        self.pp_group, self.model_path = pp_group, model_path
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

    def _tokens(self) -> ReasoningTokens:
        from transformers import AutoTokenizer

        return family_tokens(AutoTokenizer.from_pretrained(self.model_path), self.model_type)

    def rows(self, embed_tokens, tokens: ReasoningTokens, all_reduce=None
             ) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        """(table [>= v_len, H], v_start, v_len, special [3, H]) for this rank's mixtures;
        `embed_tokens`: the model's vocab-parallel embedding (first stage)."""
        if self.pp_group.is_first_rank:
            from rio_sglang.runtime.attach import shard_rows

            return shard_rows(embed_tokens, tokens, all_reduce)
        v_start, v_len = self.mix_range
        if not self.ready:  # --load-format dummy: random rows, as the weights are
            log.warning("rio-sglang: dummy weights, random embedding rows for latent steps")
            self.embed.normal_(0.0, 0.02)
            self.special.normal_(0.0, 0.02)
        return self.embed, v_start, v_len, self.special


def even_shard(vocab: int, rank: int, size: int) -> tuple[int, int]:
    """(first vocab id, rows) of this TP rank's share of a last stage's mixture rows."""
    per = -(-vocab // size)
    start = min(rank * per, vocab)
    return start, min(per, vocab - start)

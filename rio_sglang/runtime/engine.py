"""The per-step device work of SwiReasoning inside our model's forward (no host round trip).

Step k's update needs step k's raw logits and the token SGLang sampled from them, so it runs at
the start of forward k+1: `begin` (embedding override for latent slots) reads the logits kept by
`end` of forward k and the sampled token, which is forward k+1's input id. `end` also forces the
next sampled token when an injection (`</think>`, the termination text) is due.
"""

from __future__ import annotations

import logging

import torch

from rio_sglang.reasoning.spec import ReasoningStats
from rio_sglang.reasoning.state import EXPLICIT, ReasoningState
from rio_sglang.reasoning.tokens import resolve_tokens

log = logging.getLogger(__name__)
HISTORY = 4096  # steps whose mode (latent / explicit) a response reports, per request
_RUNTIME: ReasoningRuntime | None = None  # one model per scheduler process (per TP rank)


class ReasoningRuntime:
    """Device state for every request slot: SwiReasoning state and the last raw logits."""

    def __init__(self, num_slots: int, vocab: int, tokenizer_path: str, device,
                 dtype: torch.dtype):
        from transformers import AutoTokenizer

        global _RUNTIME
        tokens = resolve_tokens(AutoTokenizer.from_pretrained(tokenizer_path))
        self.state = ReasoningState(num_slots, tokens, vocab, device)
        self.last_logits = torch.zeros(num_slots, vocab, dtype=torch.float32, device=device)
        # Per-step modes for the response ("L" / "E"): 1 latent, 0 explicit, -1 not reached.
        self.history = torch.full((num_slots, HISTORY), -1, dtype=torch.int8, device=device)
        self.vocab = vocab
        self.last_dtype = dtype
        _RUNTIME = self
        log.warning("rio-sglang reasoning runtime: %d slots, vocab %d", num_slots, vocab)

    def admit(self, admission) -> None:
        if admission.slots:
            self.state.reset_slots(admission.slots, admission.specs, admission.max_new_tokens)
            idx = torch.tensor(admission.slots, device=self.history.device)
            self.history.index_fill_(0, idx, -1)

    def override_embeds(self, input_ids, embeds, forward_batch, embed_weight) -> torch.Tensor:
        """Decode: replace the input rows of latent/switch slots by SwiReasoning's next input."""
        if not forward_batch.forward_mode.is_decode():
            return embeds
        slots = forward_batch.req_pool_indices.long()  # [B]
        active = self.state.t["kind"].index_select(0, slots) != EXPLICIT  # [B]
        step = self.state.t["step"].index_select(0, slots).long()  # [B], before this update
        out = self.state.step(slots, self.last_logits.index_select(0, slots), input_ids,
                              embed_weight[: self.vocab])
        col = step.clamp(max=HISTORY - 1)
        keep = self.history[slots, col]
        mode = torch.where(step < HISTORY, out.is_latent.to(torch.int8), keep)
        self.history.index_put_((slots, col), mode)
        return torch.where(active[:, None], out.next_embeds.to(embeds.dtype), embeds)

    def end(self, forward_batch, logits: torch.Tensor) -> None:
        """logits: [B, V'] this forward's next-token logits (V' may be padded); kept raw, then
        forced in place where an injected token or the end of the answer budget is due."""
        slots = forward_batch.req_pool_indices.long()  # [B]
        # The reference computes p0 from logits in the model's dtype (transformers returns them
        # so); SGLang's are fp32. Round alike so latent mixtures agree.
        raw = logits[:, : self.vocab].to(self.last_dtype).float()
        self.last_logits.index_copy_(0, slots, raw)
        t = self.state.t
        active = t["kind"].index_select(0, slots) != EXPLICIT
        pos, n = t["queue_pos"].index_select(0, slots), t["queue_len"].index_select(0, slots)
        pending = active & (pos < n)
        queue = self.state.queue.index_select(0, slots)  # [B, Q]
        head = queue.gather(1, pos.clamp(max=queue.shape[1] - 1).long()[:, None])[:, 0]
        done = active & (t["answer_budget"].index_select(0, slots) == 0)
        forced = torch.where(pending, head, torch.where(done, self.state.eos_id, -1))  # [B]
        cols = torch.arange(logits.shape[1], device=logits.device)[None, :]
        one_hot = torch.where(cols == forced[:, None], 0.0, float("-inf")).to(logits.dtype)
        logits.copy_(torch.where((forced >= 0)[:, None], one_hot, logits))


def finish(tracked, output_len: int) -> dict:
    """Statistics of a finished request (one host copy), and its slot released."""
    if tracked is None or _RUNTIME is None:
        stats = ReasoningStats(0, output_len, 0, False, False, False)
        return {**stats.to_json(), "modes": "E" * min(output_len, HISTORY)}
    stats = _RUNTIME.state.stats([tracked.slot])[0]
    row = _RUNTIME.history[tracked.slot].tolist()
    _RUNTIME.state.release_slots([tracked.slot])
    modes = "".join("L" if m == 1 else "E" for m in row if m >= 0)
    return {**stats.to_json(), "modes": modes}

"""The per-step device work of SwiReasoning, around SGLang's sampler (no host round trip).

SGLang 0.5.23's sampling observer (`sglang/srt/sampling/sampling_observer.py`) brackets the
sampler of every batch that holds latent / switch rows (`Rows`, set on the batch's sampling info
by the forward-batch hook):

- `before_sample`: the rows' logits (after penalties, before grammar masks) are the step's raw
  logits.
- `after_sample`: one state-machine step per row (`ReasoningState.step`) from those logits and
  the model's sampled token gives the emitted token (an injection, `</think>` or the termination
  text, replaces the sample in SGLang's output tensor), the next input embedding, the step's mode
  and the statistics (`Relay`).
- `publish`: the relay is written into per-slot buffers. The model's forward reads them when it
  embeds the next decode step (`override_embeds`: a gather and a select indexed by the batch's
  request slots, the only reasoning work inside a captured CUDA graph), and a finished request's
  response reads its statistics (`finish`).

Under pipeline parallelism the step runs on the last stage, which holds the logits; SGLang
carries the relay to the first stage with the sampled tokens (`to_pp_tensors`, then the first
stage's observer `from_pp_tensors` publishes it there, where the next step is embedded).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rio_sglang.reasoning.spec import ReasoningSpec, ReasoningStats
from rio_sglang.reasoning.state import ReasoningState
from rio_sglang.reasoning.tokens import resolve_tokens

log = logging.getLogger(__name__)
HISTORY = 4096  # steps whose mode (latent / explicit) a response reports, per request
STAT_FIELDS = tuple(f.name for f in dataclasses.fields(ReasoningStats))
_BOOL_STATS = {f.name for f in dataclasses.fields(ReasoningStats) if f.type in (bool, "bool")}
ROWS_ATTR = "rio_reasoning_rows"  # on a batch's SamplingBatchInfo: its `Rows`
_RUNTIME: ReasoningRuntime | None = None  # one model per scheduler process (per rank)


@dataclass(frozen=True)
class Rows:
    """The rows of a batch that take a SwiReasoning step after sampling: latent / switch
    requests whose prompt is complete (a middle prefill chunk samples nothing real)."""

    index: torch.Tensor  # [R] int64: row in the batch
    slots: torch.Tensor  # [R] int64: the row's request slot


@dataclass(frozen=True)
class Relay:
    """One step's result for R rows, published on this stage and (PP) on the first stage.
    An SGLang auxiliary device output: its host part is empty (statistics are read once, when a
    request finishes)."""

    slots: torch.Tensor  # [R] int64
    rows: torch.Tensor  # [R, 2 + len(STAT_FIELDS)] int32: step index (HISTORY: none
    # recorded), latent?, statistics
    embeds: torch.Tensor  # [R, H] model dtype: the next input

    def to_pp_tensors(self) -> dict[str, torch.Tensor]:
        return {"slots": self.slots, "rows": self.rows, "embeds": self.embeds}

    @classmethod
    def from_tensors(cls, tensors) -> Relay:
        return cls(tensors["slots"].long(), tensors["rows"], tensors["embeds"])

    def copy_to_host(self, copy_tensor) -> _NothingOnHost:
        return _NothingOnHost()


class _NothingOnHost:
    def consume(self, batch, commits) -> None:
        pass


class ReasoningRuntime:
    """Per-slot device state: SwiReasoning's state machine (stepped where the logits are) and
    what the forward and the responses read (published)."""

    def __init__(self, num_slots: int, vocab: int, hidden: int, tokenizer_path: str, device,
                 dtype: torch.dtype):
        from transformers import AutoTokenizer

        global _RUNTIME
        tokens = resolve_tokens(AutoTokenizer.from_pretrained(tokenizer_path))
        self.state = ReasoningState(num_slots, tokens, vocab, device)
        # Published per slot: is the request latent/switch, its next input, its per-step modes
        # (1 latent, 0 explicit, -1 not reached) and its statistics.
        self.active = torch.zeros(num_slots, dtype=torch.bool, device=device)
        self.pending = torch.zeros(num_slots, hidden, dtype=dtype, device=device)
        self.history = torch.full((num_slots, HISTORY), -1, dtype=torch.int8, device=device)
        self.stats = torch.zeros(num_slots, len(STAT_FIELDS), dtype=torch.int32, device=device)
        self.vocab = vocab
        self.dtype = dtype
        self._rows: Rows | None = None
        self._rows_key: tuple | None = None
        _RUNTIME = self
        log.warning("rio-sglang reasoning runtime: %d slots, vocab %d", num_slots, vocab)

    def rows(self, index: list[int], slots: list[int]) -> Rows:
        """The batch's stepping rows on the device. A decode batch keeps its composition for
        many steps: the last one is reused, and a new one is copied without blocking the host."""
        key = (tuple(index), tuple(slots))
        if self._rows_key != key:
            pair = torch.tensor([index, slots], dtype=torch.long)
            if self.active.device.type == "cuda":
                pair = pair.pin_memory()
            pair = pair.to(self.active.device, non_blocking=True)
            self._rows, self._rows_key = Rows(pair[0], pair[1]), key
        return self._rows

    def admit(self, slots: Sequence[int], specs: Sequence[ReasoningSpec],
              max_new_tokens: Sequence[int]) -> None:
        """New latent / switch requests, before their first forward (host side, once each)."""
        self.state.reset_slots(slots, specs, max_new_tokens)
        idx = torch.tensor(list(slots), dtype=torch.long, device=self.active.device)
        self.active.index_fill_(0, idx, True)
        self.history.index_fill_(0, idx, -1)
        self.stats.index_fill_(0, idx, 0)

    def release(self, slots: Sequence[int]) -> None:
        self.state.release_slots(slots)
        idx = torch.tensor(list(slots), dtype=torch.long, device=self.active.device)
        self.active.index_fill_(0, idx, False)

    def override_embeds(self, embeds: torch.Tensor, forward_batch) -> torch.Tensor:
        """Decode: latent / switch slots take their published next input. Reads device buffers
        only (padded CUDA-graph rows read some slot and are discarded)."""
        if not forward_batch.forward_mode.is_decode():
            return embeds
        slots = forward_batch.req_pool_indices.long()[: embeds.shape[0]]  # [B]
        active = self.active.index_select(0, slots)[:, None]  # [B, 1]
        return torch.where(active, self.pending.index_select(0, slots).to(embeds.dtype), embeds)

    def before_sample(self, rows: Rows, logits: torch.Tensor) -> torch.Tensor:
        """logits: [B, V'] the batch's (V' may be padded) -> [R, V] the rows' raw logits."""
        # The reference computes p0 from logits in the model's dtype (transformers returns them
        # so); SGLang's are fp32. Round alike so latent mixtures agree.
        return logits.index_select(0, rows.index)[:, : self.vocab].to(self.dtype).float()

    def after_sample(self, rows: Rows, raw: torch.Tensor, sampled: torch.Tensor,
                     table: torch.Tensor) -> Relay:
        """sampled: [B] the batch's tokens, in place: a row's pending injection (`</think>`,
        the termination text) or its end (EOS, the answer budget spent) replaces the model's
        own sample, which the step reads first (a sampled `</think>` locks explicit mode).
        table: [V(+pad), H] embedding rows to mix."""
        s = rows.slots
        step = self.state.t["step"].index_select(0, s)  # [R], before this update
        own = sampled.index_select(0, rows.index)
        out = self.state.step(s, raw, own, table[: self.vocab])
        sampled.index_copy_(0, rows.index, out.next_token.to(sampled.dtype))
        stats = [self.state.t[name].index_select(0, s).int() for name in STAT_FIELDS]
        step = torch.where(out.stepped, step, HISTORY)  # no step: no mode to record
        cols = torch.stack([step.int(), out.is_latent.int(), *stats], dim=1)  # [R, 2 + S]
        return Relay(s, cols, out.next_embeds.to(self.dtype))

    def publish(self, relay: Relay) -> None:
        s = relay.slots
        self.pending.index_copy_(0, s, relay.embeds.to(self.pending.dtype))
        step = relay.rows[:, 0].long()
        col = step.clamp(max=HISTORY - 1)
        mode = torch.where(step < HISTORY, relay.rows[:, 1].to(torch.int8), self.history[s, col])
        self.history.index_put_((s, col), mode)
        self.stats.index_copy_(0, s, relay.rows[:, 2:])

    def finish(self, slot: int) -> dict:
        """A finished request's statistics (one host copy), and its slot released."""
        values = self.stats[slot].tolist()
        row = self.history[slot].tolist()
        self.release([slot])
        stats = {n: bool(v) if n in _BOOL_STATS else int(v) for n, v in zip(STAT_FIELDS, values)}
        modes = "".join("L" if m == 1 else "E" for m in row if m >= 0)
        return {**stats, "modes": modes}


class ReasoningObserver:
    """SGLang's `SamplingObserver` (and its pipeline-parallel transport) for our model."""

    def __init__(self, model):
        self.model = model  # .reasoning: the runtime; .latent_table(): rows to mix

    def is_active(self, sampling_info) -> bool:
        return getattr(sampling_info, ROWS_ATTR, None) is not None

    def before_grammar(self, logits, sampling_info):
        rows = getattr(sampling_info, ROWS_ATTR)
        return rows, self.model.reasoning.before_sample(rows, logits)

    def after_sample(self, state, token_ids) -> Relay:
        rows, raw = state
        runtime = self.model.reasoning
        relay = runtime.after_sample(rows, raw, token_ids, self.model.latent_table())
        runtime.publish(relay)
        return relay

    def from_pp_tensors(self, tensors) -> Relay:
        relay = Relay.from_tensors(tensors)
        self.model.reasoning.publish(relay)
        return relay


def finish(tracked, output_len: int) -> dict:
    """Statistics of a finished request (released), or explicit ones for an untracked one."""
    if tracked is None or _RUNTIME is None:
        stats = ReasoningStats(0, output_len, 0, False, False, False)
        return {**stats.to_json(), "modes": "E" * min(output_len, HISTORY)}
    return _RUNTIME.finish(tracked.slot)

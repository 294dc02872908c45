"""The per-step device work of SwiReasoning, around SGLang's sampler (no host round trip).

SGLang 0.5.23's sampling observer (`sglang/srt/sampling/sampling_observer.py`) brackets the
sampler of every batch that holds latent / switch rows (`Rows`, set on the batch's sampling info
by the forward-batch hook); the device work is `reasoning/device.py::DeviceStep`:

- `before_grammar` (the logits are still raw: no grammar mask, bias or temperature yet): the
  rows' log-sum-exp and entropy in one split-V pass, and the soft mixture p @ E over this rank's
  vocab shard for the rows whose next input may be soft (two launches; under TP one all-reduce
  of [R, H] fp32 completes the mixture).
- `after_sample`: one launch steps every row's state from its entropy and the model's sample,
  writes the emitted token into SGLang's output tensor (an injection, `</think>` or the
  termination text, replaces the sample), and publishes each slot's next input (`pending`,
  where `use` says the next decode step embeds it rather than the token), its per-step mode and
  its statistics. The model's forward reads them when it embeds the next decode step
  (`override_embeds`: a gather and a select indexed by the batch's request slots, the only
  reasoning work inside a captured CUDA graph); a finished request's response reads its
  statistics (`finish`).

Under pipeline parallelism the step runs on the last stage, which holds the logits; SGLang
carries the relay ([R, H] next inputs, flags, statistics) to the first stage with the sampled
tokens (`to_pp_tensors`; the first stage's observer `from_pp_tensors` publishes it there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from rio_kernels.swir_step.launch import PreSample
from rio_sglang.reasoning.device import HISTORY, DeviceStep
from rio_sglang.reasoning.spec import ReasoningStats
from rio_sglang.runtime.context import CONTEXT

log = logging.getLogger(__name__)
ROWS_ATTR = "rio_reasoning_rows"  # on a batch's SamplingBatchInfo: its `Rows`


@dataclass(frozen=True)
class Rows:
    """The rows of a batch that take a SwiReasoning step after sampling: latent / switch
    requests whose prompt is complete (a middle prefill chunk samples nothing real)."""

    index: torch.Tensor  # [R] int64: row in the batch
    slots: torch.Tensor  # [R] int64: the row's request slot


@dataclass(frozen=True)
class Relay:
    """One step's result, an SGLang auxiliary device output. Under pipeline parallelism it
    carries the rows' published values to the first stage (`tensors`); its host part is empty
    (statistics are read once, when a request finishes)."""

    tensors: dict[str, torch.Tensor] | None  # DeviceStep.relay (PP only)

    def to_pp_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors or {})

    def copy_to_host(self, copy_tensor) -> _NothingOnHost:
        return _NothingOnHost()


class _NothingOnHost:
    def consume(self, batch, commits) -> None:
        pass


class ReasoningRuntime:
    """One rank's reasoning step (`DeviceStep`) and what SGLang's flow needs around it."""

    def __init__(self, step: DeviceStep, relay_to_first_stage: bool):
        self.step = step
        self.relay_to_first_stage = relay_to_first_stage
        self._rows: Rows | None = None
        self._rows_key: tuple | None = None
        CONTEXT.runtime = self  # one model per scheduler process (per rank)

    def rows(self, index: list[int], slots: list[int]) -> Rows:
        """The batch's stepping rows on the device. A decode batch keeps its composition for
        many steps: the last one is reused, and a new one is copied without blocking the host."""
        key = (tuple(index), tuple(slots))
        if self._rows_key != key:
            pair = torch.tensor([index, slots], dtype=torch.long)
            device = self.step.table.device
            if device.type == "cuda":
                pair = pair.pin_memory()
            pair = pair.to(device, non_blocking=True)
            self._rows, self._rows_key = Rows(pair[0], pair[1]), key
        return self._rows

    def admit(self, slots, specs, max_new_tokens) -> None:
        self.step.admit(slots, specs, max_new_tokens)

    def release(self, slots) -> None:
        self.step.release(slots)

    def override_embeds(self, embeds: torch.Tensor, forward_batch) -> torch.Tensor:
        """Decode: slots whose next input is soft take it. Reads device buffers only (padded
        CUDA-graph rows read some slot and are discarded)."""
        if not forward_batch.forward_mode.is_decode():
            return embeds
        slots = forward_batch.req_pool_indices.long()[: embeds.shape[0]]  # [B]
        use = self.step.soft_input(slots)[:, None]  # [B, 1]
        pending = self.step.tables.pending.index_select(0, slots).to(embeds.dtype)
        return torch.where(use, pending, embeds)

    def before_sample(self, rows: Rows, logits: torch.Tensor) -> PreSample:
        """logits: [B, V'] the batch's raw logits (V' may be padded)."""
        return self.step.pre(logits, rows.index, rows.slots)

    def after_sample(self, pre: PreSample, sampled: torch.Tensor) -> Relay:
        """sampled: [B] the batch's tokens, rewritten in place for the stepping rows."""
        row_out = self.step.post(pre, sampled)
        return Relay(self.step.relay(pre.slots, row_out) if self.relay_to_first_stage else None)

    def publish(self, relay: Relay) -> None:
        self.step.publish(relay.tensors)

    def finish(self, slot: int) -> dict:
        return self.step.finish(slot)


class ReasoningObserver:
    """SGLang's `SamplingObserver` (and its pipeline-parallel transport) for our model."""

    def __init__(self, model):
        self.model = model  # .reasoning: the runtime

    def is_active(self, sampling_info) -> bool:
        return getattr(sampling_info, ROWS_ATTR, None) is not None

    def before_grammar(self, logits, sampling_info) -> PreSample:
        return self.model.reasoning.before_sample(getattr(sampling_info, ROWS_ATTR), logits)

    def after_sample(self, state: PreSample, token_ids) -> Relay:
        return self.model.reasoning.after_sample(state, token_ids)

    def from_pp_tensors(self, tensors) -> Relay:
        relay = Relay(dict(tensors))
        self.model.reasoning.publish(relay)
        return Relay(None)


def finish(tracked, output_len: int) -> dict:
    """Statistics of a finished request (released), or explicit ones for an untracked one."""
    if tracked is None or CONTEXT.runtime is None:
        stats = ReasoningStats(0, output_len, 0, False, False, False)
        return {**stats.to_json(), "modes": "E" * min(output_len, HISTORY)}
    return CONTEXT.runtime.finish(tracked.slot)

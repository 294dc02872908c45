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
  statistics (`final_stats`).

Under pipeline parallelism the step runs on the last stage, which holds the logits; SGLang
carries the relay ([R, H] next inputs, flags, statistics) to the first stage with the sampled
tokens (`to_pp_tensors`; the first stage's observer `from_pp_tensors` publishes it there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from rio_kernels.swir_step.launch import PreSample
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.runtime.record import Record

log = logging.getLogger(__name__)
ROWS_ATTR = "rio_reasoning_rows"  # on a batch's SamplingBatchInfo: its `Rows`
RUNTIME_ATTR = "rio_reasoning"  # on SGLang's ModelRunner: this rank's `ReasoningRuntime`


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
    """One rank's reasoning step (`DeviceStep`), the slots its latent / switch records hold,
    and what SGLang's flow needs around it. The model runner holds it (`RUNTIME_ATTR`)."""

    def __init__(self, device: DeviceStep, relay_to_first_stage: bool):
        self.device = device
        self.relay_to_first_stage = relay_to_first_stage
        self.holders: dict[int, Record] = {}  # slot -> the record whose state it holds
        self.stale: list[int] = []  # slots of aborted records, released before the next admits
        self.batch = None  # the ForwardBatch being run (`attach.py`'s forward tap)
        self._rows: Rows | None = None
        self._rows_key: tuple | None = None

    def claim(self, record: Record, slot: int) -> tuple[bool, list[int]]:
        """`record` is in a batch, in `slot`: (reset the slot for it?, slots to release first).

        A slot still held by another record (one that left without finishing through the output
        streamer) is released, so that an explicit request there decodes its own tokens; a
        latent record found in a new slot (retracted, then prefilled again) starts over there.
        Slots of aborted records are released first."""
        release, self.stale = self.stale, []
        holder = self.holders.get(slot)
        if holder is not None and holder is not record:
            holder.slot = None
            del self.holders[slot]
            release.append(slot)
        if not record.latent or record.slot == slot:
            return False, release
        if record.slot is not None and self.holders.get(record.slot) is record:
            del self.holders[record.slot]
            release.append(record.slot)
        record.slot = slot
        self.holders[slot] = record
        return True, release

    def final_stats(self, record: Record) -> dict:
        """A finished record's statistics and per-step modes (one host copy); slot released.
        A record holds a slot (`record.slot`) exactly while `holders` maps it to the record."""
        slot, record.slot = record.slot, None
        del self.holders[slot]
        return self.device.read_final(slot)

    def abort(self, record: Record) -> None:
        """An aborted record's slot is released before the next batch's admissions (in stream
        order with the device's work)."""
        slot, record.slot = record.slot, None
        if self.holders.get(slot) is record:
            del self.holders[slot]
            self.stale.append(slot)

    def rows(self, index: list[int], slots: list[int]) -> Rows:
        """The batch's stepping rows on the device. A decode batch keeps its composition for
        many steps: the last one is reused, and a new one is copied without blocking the host."""
        key = (tuple(index), tuple(slots))
        if self._rows_key != key:
            pair = torch.tensor([index, slots], dtype=torch.long)
            device = self.device.table.device
            if device.type == "cuda":
                pair = pair.pin_memory()
            pair = pair.to(device, non_blocking=True)
            self._rows, self._rows_key = Rows(pair[0], pair[1]), key
        return self._rows

    def reset(self, slots, specs, max_new_tokens) -> None:
        self.device.reset(slots, specs, max_new_tokens)

    def release(self, slots) -> None:
        self.device.release(slots)

    def override_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds: [B, H] a decode step's input embeddings -> the same, where a slot's next
        input is soft its `pending` row. Reads device buffers only (padded CUDA-graph rows read
        some slot and are discarded): a gather and a select inside a captured graph."""
        batch = self.batch
        if batch is None or not batch.forward_mode.is_decode() or embeds.dim() != 2:
            return embeds
        slots = batch.req_pool_indices.long()[: embeds.shape[0]]  # [B]
        use = self.device.soft_input(slots)[:, None]  # [B, 1]
        pending = self.device.tables.pending.index_select(0, slots).to(embeds.dtype)
        return torch.where(use, pending, embeds)

    def before_sample(self, rows: Rows, logits: torch.Tensor) -> PreSample:
        """logits: [B, V'] the batch's raw logits (V' may be padded)."""
        return self.device.pre(logits, rows.index, rows.slots)

    def after_sample(self, pre: PreSample, sampled: torch.Tensor) -> Relay:
        """sampled: [B] the batch's tokens, rewritten in place for the stepping rows."""
        row_out = self.device.post(pre, sampled)
        return Relay(self.device.relay(pre.slots, row_out) if self.relay_to_first_stage else None)

    def publish(self, relay: Relay) -> None:
        self.device.publish(relay.tensors)


class ReasoningObserver:
    """SGLang's `SamplingObserver` (and its pipeline-parallel transport) for our model."""

    def __init__(self, runtime: ReasoningRuntime):
        self.runtime = runtime

    def is_active(self, sampling_info) -> bool:
        return getattr(sampling_info, ROWS_ATTR, None) is not None

    def before_grammar(self, logits, sampling_info) -> PreSample:
        return self.runtime.before_sample(getattr(sampling_info, ROWS_ATTR), logits)

    def after_sample(self, state: PreSample, token_ids) -> Relay:
        return self.runtime.after_sample(state, token_ids)

    def from_pp_tensors(self, tensors) -> Relay:
        relay = Relay(dict(tensors))
        self.runtime.publish(relay)
        return Relay(None)

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
from rio_sglang.logmarks import REASONING_MARK
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.runtime.journal import Journal
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
    records: tuple = ()  # [R] the rows' `record.py::Record`s (their trajectories, journal.py)


@dataclass(frozen=True)
class Relay:
    """One step's result, an SGLang auxiliary device output. Under pipeline parallelism it
    carries the rows' published values to the first stage (`tensors`). Its host part is the
    batch rows whose answer budget was spent (`ended`: they emitted the EOS that ends them);
    statistics are read once, when a request finishes."""

    tensors: dict[str, torch.Tensor] | None  # DeviceStep.relay (PP only)
    ended: torch.Tensor | None = None  # [R] int64: the batch row where spent, else -1
    eos: int | None = None  # the token a spent budget emits

    def to_pp_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors or {})

    def copy_to_host(self, copy_tensor) -> HostRelay:
        return HostRelay(None if self.ended is None else copy_tensor(self.ended), self.eos)


class HostRelay:
    """A step's host part: read once SGLang's copies of the step are done, before it commits
    the step's tokens to its requests (`hooks.py::answer_budgets`)."""

    def __init__(self, ended: torch.Tensor | None, eos: int | None):
        self.ended, self.eos = ended, eos

    def finish_spent(self, batch) -> None:
        """A request whose answer budget is spent ends with this step's token (the EOS the
        step emitted), whatever `ignore_eos` says, as the upstream loop ends there; its finish
        reason names the budget (`output.py::AnswerBudgetSpent`)."""
        if self.ended is None:
            return
        from rio_sglang.runtime.output import AnswerBudgetSpent

        for row in self.ended.tolist():
            if row >= 0:
                req = batch.reqs[row]
                if not req.finished():
                    req.to_finish = AnswerBudgetSpent(self.eos)

    def consume(self, batch, commits) -> None:
        pass


class ReasoningRuntime:
    """One rank's reasoning step (`DeviceStep`), the slots its latent / switch records hold,
    and what SGLang's flow needs around it. The model runner holds it (`RUNTIME_ATTR`)."""

    def __init__(self, device: DeviceStep, relay_to_first_stage: bool, journal: Journal):
        self.device = device
        self.relay_to_first_stage = relay_to_first_stage
        self.journal = journal  # the records' trajectories: exact resumption after retraction
        self.holders: dict[int, Record] = {}  # slot -> the record whose state it holds
        self.stale: list[int] = []  # slots of aborted records, released before the next admits
        self.batch = None  # the ForwardBatch being run (`attach.py`'s forward tap)
        self._rows: Rows | None = None
        self._rows_key: tuple | None = None

    def claim(self, record: Record, slot: int) -> tuple[bool, list[int]]:
        """`record` is in a batch, in `slot`: (reset the slot for it?, slots to release first).

        A slot still held by another record (one that left without finishing through the output
        streamer, or was retracted) is released, so that an explicit request there decodes its
        own tokens. A latent record found in a new slot, or retracted (`record.retracted`, the
        caller then `resume`s it there), is reset there. Slots of aborted records are released
        first."""
        release, self.stale = self.stale, []
        holder = self.holders.get(slot)
        if holder is not None and holder is not record:
            holder.slot = None
            del self.holders[slot]
            release.append(slot)
        if not record.latent or (record.slot == slot and not record.retracted):
            return False, release
        if record.slot not in (None, slot) and self.holders.get(record.slot) is record:
            del self.holders[record.slot]
            release.append(record.slot)
        record.slot, record.retracted = slot, False
        self.holders[slot] = record
        return True, release

    def retract(self, record: Record, committed: int) -> dict[int, torch.Tensor]:
        """SGLang retracted `record` with `committed` output tokens (it drops any the device
        stepped past them): its resume point is kept on it, and the soft inputs its output
        positions had are returned ({output index: [H] input}), for its prefill to feed again.
        Waits for the journal's copies (once per retraction, never in decode)."""
        record.retracted = True
        record.resume_point = self.journal.resume_point(record, committed)
        if record.resume_point is None:  # (a PP first stage keeps none: its last stage steps)
            if not self.relay_to_first_stage:
                log.warning("%s: request %s will resume from tokens and start its reasoning "
                            "over (no state kept at its %d tokens)", REASONING_MARK, record.rid,
                            committed)
            record.resumed_from_tokens = True
            return {}
        record.resumed_from_tokens |= record.trajectory.lost
        return self.journal.soft_inputs(record)

    def resume(self, record: Record, slot: int) -> None:
        """A retracted record, reset in `slot` for its new prefill, takes back the state it had
        after its last committed token (its statistics say if it starts over instead)."""
        point, record.resume_point = record.resume_point, None
        if point is not None:
            self.device.restore(slot, *point)

    def final_stats(self, record: Record) -> dict:
        """A finished record's statistics and per-step modes (one host copy); slot released.
        A record holds a slot (`record.slot`) exactly while `holders` maps it to the record."""
        slot, record.slot = record.slot, None
        del self.holders[slot]
        self.journal.forget(record)
        return self.device.read_final(slot)

    def abort(self, record: Record) -> None:
        """An aborted record's slot is released before the next batch's admissions (in stream
        order with the device's work)."""
        slot, record.slot = record.slot, None
        if self.holders.get(slot) is record:
            del self.holders[slot]
            self.stale.append(slot)

    def rows(self, index: list[int], slots: list[int], records: list[Record]) -> Rows:
        """The batch's stepping rows on the device. A decode batch keeps its composition for
        many steps: the last one is reused, and a new one is copied without blocking the host."""
        key = (tuple(index), tuple(slots), tuple(map(id, records)))
        if self._rows_key != key:
            pair = torch.tensor([index, slots], dtype=torch.long)
            device = self.device.table.device
            if device.type == "cuda":
                pair = pair.pin_memory()
            pair = pair.to(device, non_blocking=True)
            self._rows, self._rows_key = Rows(pair[0], pair[1], tuple(records)), key
        return self._rows

    def reset(self, slots, specs, max_new_tokens) -> None:
        self.device.reset(slots, specs, max_new_tokens)

    def release(self, slots) -> None:
        self.device.release(slots)

    def override_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds: [B, H] a decode step's input embeddings -> the same, where a slot's next
        input is soft its `pending` row. Reads device buffers only (padded CUDA-graph rows read
        some slot and are discarded): a gather and a select inside a captured graph. (A resumed
        request's prefill gets its soft inputs through SGLang's own positional embedding
        overrides, `hooks.py::retracted`.)"""
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

    def after_sample(self, rows: Rows, pre: PreSample, sampled: torch.Tensor) -> Relay:
        """sampled: [B] the batch's tokens, rewritten in place for the stepping rows. The rows'
        new states and inputs go to their trajectories (copies launched, never waited on)."""
        budget = self.device.answer_budget(pre.slots)  # before the step: 0, it only emits EOS
        row_out = self.device.post(pre, sampled)
        ended = torch.where(budget == 0, pre.rows, -1)
        inputs = self.device.tables.pending.index_select(0, pre.slots) \
            if self.journal.keeps_inputs else None
        self.journal.capture(rows.records, self.device.state_rows(pre.slots), inputs)
        if not self.relay_to_first_stage:
            return Relay(None, ended, self.eos)
        return Relay({**self.device.relay(pre.slots, row_out), "ended": ended}, ended, self.eos)

    @property
    def eos(self) -> int | None:
        eos = self.device.state.eos_id
        return None if eos < 0 else eos

    def publish(self, relay: Relay) -> None:
        self.device.publish(relay.tensors)


class ReasoningObserver:
    """SGLang's `SamplingObserver` (and its pipeline-parallel transport) for our model."""

    def __init__(self, runtime: ReasoningRuntime):
        self.runtime = runtime

    def is_active(self, sampling_info) -> bool:
        return getattr(sampling_info, ROWS_ATTR, None) is not None

    def before_grammar(self, logits, sampling_info) -> tuple[Rows, PreSample]:
        rows = getattr(sampling_info, ROWS_ATTR)
        return rows, self.runtime.before_sample(rows, logits)

    def after_sample(self, state: tuple[Rows, PreSample], token_ids) -> Relay:
        return self.runtime.after_sample(*state, token_ids)

    def from_pp_tensors(self, tensors) -> Relay:
        relay = Relay(dict(tensors), tensors.get("ended"), self.runtime.eos)
        self.runtime.publish(relay)
        return Relay(None, relay.ended, relay.eos)

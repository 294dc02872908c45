"""The reasoning context of one SGLang process: what our hooks share between SGLang's calls.

SGLang hands each hook only its own arguments, so the hooks meet here (`CONTEXT`, one per
process): the scheduler's forward-batch, output and abort hooks share this rank's runtime and
its per-request bookkeeping, the tokenizer manager leaves a finished request's statistics for
the OpenAI stream that ends it. Host only; no SGLang import.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.runtime import defaults

if TYPE_CHECKING:
    from rio_sglang.runtime.step import ReasoningRuntime

FINAL_STATS_MAX = 4096  # a stream whose client went away never collects its entry


def spec_of(custom_params) -> ReasoningSpec | None:
    """The request's spec from `sampling_params.custom_params`, else the server default
    (`defaults.py`), or None if there is neither."""
    return defaults.effective(custom_params)[0]


def uses_latent(spec: ReasoningSpec | None) -> bool:
    return spec is not None and spec.mode != "explicit"


@dataclass
class Admission:
    """Requests whose slots the reasoning runtime resets before their first forward."""

    slots: list[int] = field(default_factory=list)
    specs: list[ReasoningSpec] = field(default_factory=list)
    max_new_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Tracked:
    slot: int
    spec: ReasoningSpec


@dataclass
class ReasoningContext:
    """Scheduler process: `runtime`, this rank's reasoning step (set when our model builds it);
    per request id, its parsed spec (`specs`, from its first batch) and, for a latent / switch
    one, its slot (`tracked`, `slot_owner`: slot -> rid), each kept until the request finishes
    (`forget`) or is aborted (`abort`). Tokenizer-manager process: `final_stats`, rid ->
    statistics of a finished request, read once by its OpenAI stream (bounded, oldest first)."""

    runtime: ReasoningRuntime | None = None
    specs: dict[str, ReasoningSpec | None] = field(default_factory=dict)
    tracked: dict[str, Tracked] = field(default_factory=dict)
    slot_owner: dict[int, str] = field(default_factory=dict)
    stale: list[int] = field(default_factory=list)  # slots of aborted requests, to release
    final_stats: OrderedDict[str, dict] = field(default_factory=OrderedDict)

    def spec_of_req(self, req, keep: bool = False) -> ReasoningSpec | None:
        """`spec_of` for a scheduler request, parsed once from its first batch on
        (`keep`: the forward-batch hook, which asks every step) until it finishes."""
        if req.rid in self.specs:
            return self.specs[req.rid]
        spec = spec_of(req.sampling_params.custom_params)
        if keep:
            self.specs[req.rid] = spec
        return spec

    def claim(self, rid: str, slot: int, spec: ReasoningSpec | None) -> tuple[bool, list[int]]:
        """A request is in a batch, in `slot`: (reset the slot for it?, slots to release first).

        A slot still owned by another request (one that left without finishing through the
        output streamer) is released, so that an explicit request there decodes its own tokens;
        a latent request found in a new slot (retracted, then prefilled again) starts over
        there. Slots of aborted requests are released first."""
        release, self.stale = self.stale, []
        previous = self.slot_owner.get(slot)
        if previous is not None and previous != rid:
            self.tracked.pop(previous, None)
            del self.slot_owner[slot]
            release.append(slot)
        if not uses_latent(spec):
            return False, release
        tracked = self.tracked.get(rid)
        if tracked is not None and tracked.slot == slot:
            return False, release
        if tracked is not None and self.slot_owner.get(tracked.slot) == rid:
            del self.slot_owner[tracked.slot]
            release.append(tracked.slot)
        self.tracked[rid] = Tracked(slot, spec)
        self.slot_owner[slot] = rid
        return True, release

    def forget(self, rid: str) -> Tracked | None:
        """A request finished: its entries go; its bookkeeping, if it was a latent / switch one
        (its slot is released by reading its statistics)."""
        self.specs.pop(rid, None)
        tracked = self.tracked.pop(rid, None)
        if tracked is not None and self.slot_owner.get(tracked.slot) == rid:
            del self.slot_owner[tracked.slot]
        return tracked

    def abort(self, rid: str) -> None:
        """A request was aborted: its entries go, a slot it still owns is released before the
        next batch's admissions (in stream order with the device's work)."""
        tracked = self.tracked.get(rid)
        if tracked is not None and self.slot_owner.get(tracked.slot) == rid:
            self.stale.append(tracked.slot)
        self.forget(rid)

    def keep_final(self, rid: str, stats: dict) -> None:
        self.final_stats[rid] = stats
        while len(self.final_stats) > FINAL_STATS_MAX:
            self.final_stats.popitem(last=False)

    def take_final(self, rid: str) -> dict | None:
        return self.final_stats.pop(rid, None)


CONTEXT = ReasoningContext()

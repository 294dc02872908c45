"""The reasoning context of one SGLang process: what our hooks share between SGLang's calls.

SGLang hands each hook only its own arguments, so the hooks meet here (`CONTEXT`, one per
process): the scheduler's forward-batch and output hooks find this rank's runtime, the
tokenizer manager leaves a finished request's statistics for the OpenAI stream that ends it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rio_sglang.runtime.step import ReasoningRuntime

FINAL_STATS_MAX = 4096  # a stream whose client went away never collects its entry


@dataclass
class ReasoningContext:
    """Scheduler process: `runtime`, this rank's reasoning step (set when our model builds
    it). Tokenizer-manager process: `final_stats`, rid -> statistics of a finished request,
    read once by its OpenAI stream (bounded, oldest dropped first)."""

    runtime: ReasoningRuntime | None = None
    final_stats: OrderedDict[str, dict] = field(default_factory=OrderedDict)

    def keep_final(self, rid: str, stats: dict) -> None:
        self.final_stats[rid] = stats
        while len(self.final_stats) > FINAL_STATS_MAX:
            self.final_stats.popitem(last=False)

    def take_final(self, rid: str) -> dict | None:
        return self.final_stats.pop(rid, None)


CONTEXT = ReasoningContext()

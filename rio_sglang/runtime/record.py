"""One request's reasoning record in a scheduler process: its spec, parsed once at admission.

`hooks.py::init_new` builds a `Record` the first time a request is in a batch (`admit`) and
hangs it on SGLang's `Req` (`RECORD_ATTR`), so that it lives and dies with the request; the
rank's `ReasoningRuntime` (`sampler.py`, held by the model runner) owns the slot a latent / switch
record holds and releases it when the record finishes or is aborted. No SGLang import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rio_sglang.reasoning.spec import HISTORY, ReasoningSpec, ReasoningStats
from rio_sglang.runtime import defaults

if TYPE_CHECKING:
    from rio_sglang.runtime.sampler import ReasoningRuntime

RECORD_ATTR = "rio_reasoning"  # on SGLang's scheduler-side `Req`: its `Record`


@dataclass(eq=False)
class Record:
    """rid, the spec it runs (None: it asked for none and the server has no default), whether
    that is the server default; `runtime` and `slot` while a latent / switch request holds
    reasoning state on this rank; its `journal.py::Trajectory` (what an exact resumption after a
    retraction needs); `retracted` from SGLang's retraction until its next prefill resumes it;
    `resumed_from_tokens` once it resumed without every soft input; `stats` once it finished."""

    rid: str
    spec: ReasoningSpec | None
    from_default: bool
    runtime: ReasoningRuntime | None = None
    slot: int | None = None
    trajectory: Any = None
    retracted: bool = False
    resume_point: Any = None  # from retraction to resumption: what `DeviceStep.restore` takes
    resumed_from_tokens: bool = False
    closed: bool = False  # finished or aborted
    stats: dict | None = None

    @property
    def latent(self) -> bool:
        """Latent or switch: steps on the device, holds a slot's state."""
        return self.spec is not None and self.spec.mode != "explicit"

    def finish(self, output_len: int, retractions: int) -> dict:
        """Final statistics (read from the device once, the slot and trajectory released) with
        the spec that applied, where it came from, and how often SGLang retracted it."""
        if self.stats is None:
            self.closed = True
            if self.runtime is not None and self.slot is not None:
                stats = self.runtime.final_stats(self)
            else:  # explicit, or no reasoning step on this server
                if self.runtime is not None:
                    self.runtime.journal.forget(self)
                explicit = ReasoningStats(0, output_len, 0, False, False, False).to_json()
                stats = {**explicit, "modes": "E" * min(output_len, HISTORY)}
            spec = None if self.spec is None else self.spec.to_json()
            self.stats = {**stats, "retractions": int(retractions),
                          "resumed_from_tokens": self.resumed_from_tokens,
                          "spec": spec, "from_default": self.from_default}
        return self.stats

    def abort(self) -> None:
        """Aborted: a slot it still holds is released before the next batch's admissions, its
        trajectory now."""
        self.closed = True
        if self.runtime is not None:
            self.runtime.journal.forget(self)
            if self.slot is not None:
                self.runtime.abort(self)


def admit(req, runtime: ReasoningRuntime | None) -> Record:
    """The request's record, built (and its spec parsed) the first time it is in a batch."""
    record = getattr(req, RECORD_ATTR, None)
    if record is None:
        spec, from_default = defaults.effective(req.sampling_params.custom_params)
        record = Record(req.rid, spec, from_default)
        setattr(req, RECORD_ATTR, record)
    if record.latent and record.runtime is None:
        record.runtime = runtime
    return record


def record_of(req) -> Record | None:
    """The request's record, None before its first batch."""
    return getattr(req, RECORD_ATTR, None)

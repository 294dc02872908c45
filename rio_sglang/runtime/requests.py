"""Per-request reasoning bookkeeping on the scheduler side (host only, no SGLang import).

The model and the scheduler share a process (one per rank), so this module-level registry is
how the forward-batch hook knows which requests it has admitted (and their slots) and how the
output streamer finds a finished request's slot for its statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.runtime import defaults


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


TRACKED: dict[str, Tracked] = {}  # rid -> slot and spec, from admission to finish
SLOT_OWNER: dict[int, str] = {}  # slot -> rid of the latent / switch request admitted there


def claim(rid: str, slot: int, spec: ReasoningSpec | None) -> tuple[bool, list[int]]:
    """A request is in a batch, in `slot`: (reset the slot for it?, slots to release first).

    A slot still owned by another request (one that left without finishing through the output
    streamer) is released, so that an explicit request there decodes its own tokens; a latent
    request found in a new slot (retracted, then prefilled again) starts over there."""
    release = []
    previous = SLOT_OWNER.get(slot)
    if previous is not None and previous != rid:
        TRACKED.pop(previous, None)
        del SLOT_OWNER[slot]
        release.append(slot)
    if not uses_latent(spec):
        return False, release
    tracked = TRACKED.get(rid)
    if tracked is not None and tracked.slot == slot:
        return False, release
    if tracked is not None and SLOT_OWNER.get(tracked.slot) == rid:
        del SLOT_OWNER[tracked.slot]
        release.append(tracked.slot)
    TRACKED[rid] = Tracked(slot, spec)
    SLOT_OWNER[slot] = rid
    return True, release


def forget(rid: str) -> Tracked | None:
    """A request finished: its bookkeeping, if it was a latent / switch one."""
    tracked = TRACKED.pop(rid, None)
    if tracked is not None and SLOT_OWNER.get(tracked.slot) == rid:
        del SLOT_OWNER[tracked.slot]
    return tracked


def spec_of(custom_params) -> ReasoningSpec | None:
    """The request's spec from `sampling_params.custom_params`, else the server default
    (`defaults.py`), or None if there is neither."""
    return defaults.effective(custom_params)[0]


_UNPARSED = object()


def spec_of_req(req) -> ReasoningSpec | None:
    """`spec_of` for a scheduler request, parsed once and kept on it (the forward and output
    hooks ask every step)."""
    spec = getattr(req, "_rio_spec", _UNPARSED)
    if spec is _UNPARSED:
        spec = spec_of(req.sampling_params.custom_params)
        req._rio_spec = spec
    return spec


def uses_latent(spec: ReasoningSpec | None) -> bool:
    return spec is not None and spec.mode != "explicit"

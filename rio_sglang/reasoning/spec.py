"""What a request asks of SwiReasoning (`ReasoningSpec`) and what it reports (`ReasoningStats`).

The API layer parses `sampling_params.custom_params[SPEC_KEY]` with `ReasoningSpec.from_json`
and answers HTTP 400 naming `ReasoningSpecError.field`; the runtime reads the frozen spec.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# Wire key of the spec inside SGLang's `sampling_params.custom_params`.
SPEC_KEY = "rio_reasoning"
MODES = ("explicit", "latent", "switch")
# Inclusive bounds of the integer fields. Step counts stay far inside the device state's int32
# (sums, `2 * max_switches`) and exact in fp32 (2^24); `validate` also holds the step counts
# to the model's context length where the server knows it.
MAX_STEPS = 1 << 24
MAX_SWITCHES = 1 << 20
INT_BOUNDS = {
    "window": (1, MAX_STEPS),
    "termination_budget": (1, MAX_STEPS),
    "max_switches": (1, MAX_SWITCHES),
    "thinking_budget": (1, MAX_STEPS),
    "cold_stop_steps": (1, MAX_STEPS),
    "soft_topk": (1, MAX_STEPS),
}
HISTORY = 4096  # steps whose mode (latent / explicit) a response reports, per request
STEP_FIELDS = ("window", "termination_budget", "thinking_budget", "cold_stop_steps")


class ReasoningSpecError(ValueError):
    """An invalid reasoning parameter; `field` names it for the HTTP 400 body."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def show(value: Any, limit: int = 48) -> str:
    """A request value for an error message, short whatever the client sent."""
    if _is_int(value) and value.bit_length() > 128:  # repr of a huge int is slow or refused
        return f"an integer of {value.bit_length()} bits"
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 16 else (
        f"a {type(value).__name__} of {len(value)} items")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ReasoningSpec:
    """Per-request reasoning parameters (SWIREASONING.md, "The three modes").

    soft_topk None mixes the full vocabulary (as the reference); a k is an opt-in shortcut.
    cold_stop_* are latent-only: stop thinking after `steps` consecutive steps with H < threshold.
    """

    mode: str = "switch"
    alpha0: float = 1.0
    beta0: float = 0.7
    window: int = 512
    max_switches: int | None = None
    thinking_budget: int | None = None
    math_tokens_explicit: bool = True
    cold_stop_threshold: float | None = None
    cold_stop_steps: int | None = None
    soft_topk: int | None = None
    termination_budget: int = 32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ReasoningSpecError("mode", f"must be one of {MODES}, got {show(self.mode)}")
        for name in ("alpha0", "beta0"):
            value = getattr(self, name)
            if not _is_number(value):
                raise ReasoningSpecError(name, f"must be a number, got {show(value)}")
            if not 0.0 <= value <= 1.0:
                raise ReasoningSpecError(name, f"must lie in [0, 1], got {show(value)}")
            object.__setattr__(self, name, float(value))
        for name, (low, high) in INT_BOUNDS.items():
            _check_int(self, name, low, high)
        if not isinstance(self.math_tokens_explicit, bool):
            raise ReasoningSpecError("math_tokens_explicit", "must be a boolean")
        threshold = self.cold_stop_threshold
        if threshold is not None:
            if not _is_number(threshold) or threshold < 0:
                raise ReasoningSpecError("cold_stop_threshold", "must be a number >= 0")
            object.__setattr__(self, "cold_stop_threshold", float(threshold))
        self._check_mode_fields()

    def _check_mode_fields(self) -> None:
        for name in ("cold_stop_threshold", "cold_stop_steps"):
            if getattr(self, name) is not None and self.mode != "latent":
                raise ReasoningSpecError(name, f"applies to mode 'latent' only, not {self.mode!r}")
        if (self.cold_stop_threshold is None) != (self.cold_stop_steps is None):
            missing = "cold_stop_steps" if self.cold_stop_steps is None else "cold_stop_threshold"
            raise ReasoningSpecError(missing, "cold stop needs both threshold and steps")
        if self.max_switches is not None and self.mode != "switch":
            raise ReasoningSpecError("max_switches", f"applies to mode 'switch', not {self.mode!r}")
        if self.thinking_budget is not None and self.mode == "explicit":
            raise ReasoningSpecError("thinking_budget", "applies to modes 'latent' and 'switch'")

    def validate(self, vocab_size: int, context_len: int | None = None) -> ReasoningSpec:
        """Checks what depends on the model (the soft-mixture k against V, step counts against
        the context length when given); returns self."""
        if self.soft_topk is not None and self.soft_topk > vocab_size:
            raise ReasoningSpecError("soft_topk", f"must be <= vocab size {vocab_size}")
        for name in STEP_FIELDS if context_len is not None else ():
            value = getattr(self, name)
            if value is not None and value > context_len:
                raise ReasoningSpecError(
                    name, f"must be <= the context length {context_len}, got {value}")
        return self

    @classmethod
    def from_json(cls, data: Any) -> ReasoningSpec:
        """Builds a spec from the request's JSON object, rejecting unknown keys."""
        if not isinstance(data, dict):
            raise ReasoningSpecError(SPEC_KEY, f"must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ReasoningSpecError(unknown[0][:64], f"unknown key (known: {sorted(known)})")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_int(spec: ReasoningSpec, name: str, low: int, high: int) -> None:
    value = getattr(spec, name)
    if value is None and spec.__dataclass_fields__[name].default is None:  # optional
        return
    if not _is_int(value):
        raise ReasoningSpecError(name, f"must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise ReasoningSpecError(name, f"must lie in [{low}, {high}], got {show(value)}")


@dataclass(frozen=True)
class ReasoningStats:
    """What one request reports in its response metadata."""

    latent_steps: int = 0
    explicit_steps: int = 0
    switches: int = 0
    injected_convergence: bool = False
    injected_termination: bool = False
    forced_think_end: bool = False  # thinking budget or cold stop injected `</think>`

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

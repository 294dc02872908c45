"""`explicit()`, `latent(**kw)`, `switching(**kw)`: validated `ReasoningSpec`s built in the caller.

Every frontend entry point (DSL `gen`, OpenAI helpers, the agent) goes through `as_spec`, so a bad
parameter raises `ReasoningSpecError` (a ValueError naming the field) before any request.
"""

from __future__ import annotations

from typing import Any

from rio_sglang.reasoning.spec import MODES, ReasoningSpec, ReasoningSpecError


def explicit() -> ReasoningSpec:
    """Stock decoding, bit for bit what SGLang does without the option."""
    return ReasoningSpec(mode="explicit")


def latent(**params: Any) -> ReasoningSpec:
    """Every thinking step latent until `</think>`, the thinking budget or a cold stop.

    params: alpha0, beta0, window, thinking_budget, math_tokens_explicit, cold_stop_threshold,
    cold_stop_steps, soft_topk, termination_budget (SWIREASONING.md, "The three modes").
    """
    return _build("latent", params)


def switching(**params: Any) -> ReasoningSpec:
    """The SwiReasoning loop: latent and explicit thinking switched by entropy.

    params: alpha0, beta0, window, max_switches, thinking_budget, math_tokens_explicit,
    soft_topk, termination_budget.
    """
    return _build("switch", params)


def as_spec(reasoning: Any) -> ReasoningSpec | None:
    """Normalises what a caller may pass as `reasoning=`: a spec, a mode name, a JSON dict or None.

    None means "send no spec" (the server's default). Anything else raises TypeError.
    """
    if reasoning is None or isinstance(reasoning, ReasoningSpec):
        return reasoning
    if isinstance(reasoning, str):
        if reasoning not in MODES:
            raise ReasoningSpecError("mode", f"must be one of {MODES}, got {reasoning!r}")
        return ReasoningSpec(mode=reasoning)
    if isinstance(reasoning, dict):
        return ReasoningSpec.from_json(reasoning)
    raise TypeError("reasoning must be a ReasoningSpec (explicit(), latent(...), switching(...)), "
                    f"a mode name {MODES}, a dict or None; got {type(reasoning).__name__}")


def _build(mode: str, params: dict[str, Any]) -> ReasoningSpec:
    if "mode" in params:
        raise ReasoningSpecError("mode", f"is fixed by the constructor ({mode!r}); "
                                 "use explicit(), latent() or switching()")
    # from_json names an unknown parameter as a ReasoningSpecError, not a bare TypeError.
    return ReasoningSpec.from_json({"mode": mode, **params})

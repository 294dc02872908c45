"""ReasoningSpec parsing and validation: each row is one line of SWIREASONING.md's parameters."""

from __future__ import annotations

import pytest

from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec, ReasoningSpecError, ReasoningStats

V = 512  # vocabulary size the vocab-dependent checks run against

# (request JSON, field named by the error or None when accepted)
CASES = [
    ({}, None),
    ({"mode": "explicit"}, None),
    ({"mode": "latent"}, None),
    ({"mode": "switch", "alpha0": 0.5, "beta0": 0.7, "window": 1, "max_switches": 2}, None),
    ({"mode": "chain"}, "mode"),
    ({"mode": None}, "mode"),
    ({"mode": "switch", "temperature": 0.6}, "temperature"),
    ({"alpha0": 1}, None),
    ({"alpha0": 0.0, "beta0": 1.0}, None),
    ({"alpha0": -0.01}, "alpha0"),
    ({"alpha0": 1.5}, "alpha0"),
    ({"beta0": 2}, "beta0"),
    ({"beta0": "0.7"}, "beta0"),
    ({"alpha0": float("nan")}, "alpha0"),
    ({"alpha0": True}, "alpha0"),
    ({"window": 0}, "window"),
    ({"window": -4}, "window"),
    ({"window": 2.5}, "window"),
    ({"window": True}, "window"),
    ({"max_switches": None}, None),
    ({"max_switches": 1}, None),
    ({"max_switches": 0}, "max_switches"),
    ({"max_switches": False}, "max_switches"),
    ({"mode": "latent", "max_switches": 2}, "max_switches"),
    ({"thinking_budget": 100}, None),
    ({"mode": "latent", "thinking_budget": 1}, None),
    ({"thinking_budget": "100"}, "thinking_budget"),
    ({"thinking_budget": 0}, "thinking_budget"),
    ({"thinking_budget": 1e3}, "thinking_budget"),
    ({"mode": "explicit", "thinking_budget": 100}, "thinking_budget"),
    ({"math_tokens_explicit": False}, None),
    ({"math_tokens_explicit": 1}, "math_tokens_explicit"),
    ({"mode": "latent", "cold_stop_threshold": 0.1, "cold_stop_steps": 8}, None),
    ({"mode": "latent", "cold_stop_threshold": 0, "cold_stop_steps": 1}, None),
    ({"mode": "switch", "cold_stop_threshold": 0.1, "cold_stop_steps": 8}, "cold_stop_threshold"),
    ({"mode": "explicit", "cold_stop_steps": 8}, "cold_stop_steps"),
    ({"mode": "latent", "cold_stop_threshold": 0.1}, "cold_stop_steps"),
    ({"mode": "latent", "cold_stop_steps": 8}, "cold_stop_threshold"),
    ({"mode": "latent", "cold_stop_threshold": -1.0, "cold_stop_steps": 8}, "cold_stop_threshold"),
    ({"mode": "latent", "cold_stop_threshold": 0.1, "cold_stop_steps": 0}, "cold_stop_steps"),
    ({"soft_topk": None}, None),
    ({"soft_topk": 1}, None),
    ({"soft_topk": V}, None),
    ({"soft_topk": 0}, "soft_topk"),
    ({"soft_topk": V + 1}, "soft_topk"),
    ({"soft_topk": 8.0}, "soft_topk"),
    ({"termination_budget": 32}, None),
    ({"termination_budget": 0}, "termination_budget"),
]


@pytest.mark.parametrize("data, field", CASES, ids=[str(c[0]) for c in CASES])
def test_validation(data: dict, field: str | None) -> None:
    if field is None:
        spec = ReasoningSpec.from_json(data).validate(V)
        assert ReasoningSpec.from_json(spec.to_json()) == spec
        return
    with pytest.raises(ReasoningSpecError) as info:
        ReasoningSpec.from_json(data).validate(V)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)


def test_defaults_are_the_reference_defaults() -> None:
    spec = ReasoningSpec.from_json({})
    assert (spec.mode, spec.alpha0, spec.beta0, spec.window) == ("switch", 1.0, 0.7, 512)
    assert spec.max_switches is None and spec.thinking_budget is None
    assert spec.math_tokens_explicit is True and spec.soft_topk is None
    assert spec.termination_budget == 32
    assert spec.cold_stop_threshold is None and spec.cold_stop_steps is None


def test_json_round_trip_keeps_every_field() -> None:
    spec = ReasoningSpec(mode="latent", alpha0=0.5, window=8, thinking_budget=64,
                         cold_stop_threshold=0.2, cold_stop_steps=4, soft_topk=16)
    data = spec.to_json()
    assert data["alpha0"] == 0.5 and data["cold_stop_steps"] == 4 and data["soft_topk"] == 16
    assert ReasoningSpec.from_json(data) == spec
    assert isinstance(ReasoningSpec.from_json({"alpha0": 1}).alpha0, float)


def test_non_object_is_rejected_under_the_wire_key() -> None:
    with pytest.raises(ReasoningSpecError) as info:
        ReasoningSpec.from_json(["switch"])
    assert info.value.field == SPEC_KEY == "rio_reasoning"


def test_spec_is_frozen() -> None:
    with pytest.raises(AttributeError):
        ReasoningSpec().window = 4  # type: ignore[misc]


def test_stats_json() -> None:
    stats = ReasoningStats(latent_steps=3, explicit_steps=2, switches=1, injected_convergence=True)
    assert stats.to_json() == {
        "latent_steps": 3, "explicit_steps": 2, "switches": 1, "injected_convergence": True,
        "injected_termination": False, "forced_think_end": False,
    }

"""Property: the batched state machine never raises on a spec that validation accepts.

Thousands of random reasoning specs, extreme and out-of-range integers included, go through
`ReasoningSpec.from_json`; each one it accepts is reset into a `ReasoningState` slot and stepped
on random logits, and must agree with `reference.swir_step` (so a bound too loose for the device
state fails here: an int32 overflow raises, a wrapped `2 * max_switches` decides wrongly). The
seed is printed and named in every failure; set SEED to replay one.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from rio_sglang.reasoning.reference import SlotState, swir_step
from rio_sglang.reasoning.spec import INT_BOUNDS, ReasoningSpec, ReasoningSpecError
from rio_sglang.reasoning.state import ReasoningState
from rio_sglang.reasoning.tokens import ReasoningTokens

SEED: int | None = None  # None: a fresh seed each run
ROUNDS, SLOTS, STEPS = 48, 64, 6  # 3,072 drawn specs
V, H = 64, 8
THINK, END, EOS, NL = 1, 2, 3, 4
TOKENS = ReasoningTokens(
    think_id=THINK, think_end_id=END, eos_id=EOS, newline_id=NL, math_ids=frozenset({10, 11}),
    convergence_ids=(END,), termination_ids=(END, 20, 21),
)
INT_FIELDS = ("window", "termination_budget", "max_switches", "thinking_budget",
              "cold_stop_steps", "soft_topk")
# Integers a client may send: int32 / int64 edges and beyond; each is either refused or held.
EXTREMES = (-(2**63), -(2**31), -1, 0, 2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**63, 2**64)
MAX_NEW_TOKENS = 2**31 - 1  # the largest the device state holds (SGLang caps it at the context)


def draw_int(rng: random.Random, name: str) -> int:
    low, high = INT_BOUNDS.get(name, (1, 2**64))
    r = rng.random()
    if r < 0.08:
        return rng.choice(EXTREMES + (low - 1, high + 1))
    if r < 0.4:
        return rng.choice((low, low + 1, high - 1, high))
    return int(math.exp(rng.uniform(0.0, math.log(high))))  # log-uniform in [1, high]


def draw_spec(rng: random.Random) -> dict:
    """A request's spec JSON: mostly valid, fields of other modes and bad values now and then."""
    mode = rng.choice(("explicit", "latent", "switch", "switch"))
    spec: dict = {"mode": mode}
    applicable = {"window", "termination_budget", "soft_topk"} | (
        {"thinking_budget"} if mode != "explicit" else set()) | (
        {"max_switches"} if mode == "switch" else set())
    for name in INT_FIELDS:
        if (name in applicable and rng.random() < 0.6) or rng.random() < 0.03:
            spec[name] = draw_int(rng, name)
    if mode == "latent" and rng.random() < 0.4:
        spec["cold_stop_steps"] = draw_int(rng, "cold_stop_steps")
        spec["cold_stop_threshold"] = rng.choice((0.0, 1e-30, rng.uniform(0, 5), 1e300))
    for name in ("alpha0", "beta0"):
        if rng.random() < 0.5:
            spec[name] = rng.choice((0.0, 1.0, rng.random()))
    spec["math_tokens_explicit"] = rng.random() < 0.5
    return spec


def draw_logits(rng: random.Random, gen: torch.Generator, n: int) -> torch.Tensor:
    """[n, V]: rows of spread entropies; one in eight nearly flat, nearly one-hot or -inf
    masked (no exact ties: top-k may order equal values either way)."""
    scale = torch.rand(n, 1, generator=gen) * 4 + 0.05
    logits = torch.randn(n, V, generator=gen) * scale
    for i in range(n):
        kind = rng.randrange(24)
        if kind == 0:
            logits[i] *= 1e-3 / scale[i]
        elif kind == 1:
            logits[i, rng.randrange(V)] += 1e4
        elif kind == 2:
            logits[i, rng.sample(range(V), V - 2)] = float("-inf")
    return logits


@pytest.fixture
def one_thread():
    """Tensors of a few hundred elements: more threads only contend on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_accepted_spec_steps_like_the_reference(monkeypatch, one_thread) -> None:
    seed = SEED if SEED is not None else random.SystemRandom().randrange(2**32)
    print(f"property seed: {seed}")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # torch references: the state machine
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    weight = torch.randn(V, H, generator=gen)  # [V, H]
    state = ReasoningState(SLOTS, TOKENS, V)
    accepted = refused = 0
    for _ in range(ROUNDS):
        specs: dict[int, tuple[ReasoningSpec, int]] = {}
        for slot in range(SLOTS):
            data = draw_spec(rng)
            try:
                spec = ReasoningSpec.from_json(data).validate(V)
            except ReasoningSpecError as e:
                refused += 1
                assert e.field in data or e.field == "cold_stop_threshold", (seed, data, e)
                continue
            for name in INT_FIELDS:
                low, high = INT_BOUNDS[name]
                value = getattr(spec, name)
                assert value is None or low <= value <= high, (seed, "bound not enforced", data)
            specs[slot] = (spec, rng.choice((1, 2, STEPS, 2**24, MAX_NEW_TOKENS,
                                             rng.randrange(1, 4096))))
        accepted += len(specs)
        try:
            state.reset_slots(list(specs), [s for s, _ in specs.values()],
                              [n for _, n in specs.values()])
        except Exception as e:  # noqa: BLE001 (any error here is the failure this test is for)
            big = [s for s, _ in specs.values()
                   if any((getattr(s, f) or 0) >= 2**31 for f in INT_FIELDS)]
            pytest.fail(f"seed {seed}: reset_slots raised {e!r} on accepted specs such as "
                        f"{(big or [s for s, _ in specs.values()])[:2]}")
        _step_round(state, specs, rng, gen, weight, seed)
        state.release_slots(list(specs))
    assert accepted > 1000 and refused > 100, (seed, accepted, refused)


def _step_round(state, specs, rng, gen, weight, seed) -> None:
    """Steps the round's live slots STEPS times against the reference; compares statistics."""
    refs = {slot: SlotState() for slot in specs}
    live = list(specs)
    for _ in range(STEPS):
        if not live:
            break
        logits = draw_logits(rng, gen, len(live))  # [B, V]
        sampled = torch.tensor([rng.choice((30, 31, 10, END, EOS, THINK)) for _ in live])
        out = state.step(torch.tensor(live), logits, sampled, weight)
        assert torch.isfinite(out.next_embeds).all(), seed
        for i, slot in enumerate(list(live)):
            spec, max_new = specs[slot]
            ref = swir_step(refs[slot], logits[i], int(sampled[i]), weight, TOKENS, spec, max_new)
            got = (int(out.next_token[i]), bool(out.is_latent[i]), bool(out.finished[i]))
            assert got == (ref.token, ref.is_latent, ref.finished), (seed, slot, spec, max_new)
            assert torch.allclose(out.next_embeds[i], ref.embed, atol=1e-4, rtol=1e-4), (
                seed, slot, spec, (out.next_embeds[i] - ref.embed).abs().max())
            if ref.finished:
                live.remove(slot)
    for slot, stats in zip(specs, state.stats(list(specs))):
        assert stats.to_json() == refs[slot].stats, (seed, specs[slot])

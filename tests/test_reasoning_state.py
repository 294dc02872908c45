"""The batched reasoning state machine on synthetic logits: each table row is a line of the spec.

Rows give the per-step entropy of the raw logits and the sampled token; the expected step kinds
read L (latent input) / E (explicit input). The batch test holds the state to `swir_step`.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from rio_sglang.reasoning import ops
from rio_sglang.reasoning.reference import SlotState, swir_step
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.reasoning.state import ReasoningState
from rio_sglang.reasoning.tokens import ReasoningTokens

V, H = 64, 16
THINK, END, EOS, NL, X = 1, 2, 3, 4, 30  # X: a plain, non-math token
TOKENS = ReasoningTokens(
    think_id=THINK, think_end_id=END, eos_id=EOS, newline_id=NL, math_ids=frozenset({10, 11}),
    convergence_ids=(END,), termination_ids=(END, 20, 21, 22),
)
WEIGHT = torch.randn(V, H, generator=torch.Generator().manual_seed(0))  # [V, H]
BASE = torch.randn(V, generator=torch.Generator().manual_seed(1))  # [V]


def logits_with_entropy(target: float) -> torch.Tensor:
    """[V] logits c * BASE whose softmax entropy is `target` (entropy falls as c grows)."""
    assert 0 < target < math.log(V)
    lo, hi = 0.0, 100.0
    for _ in range(80):
        c = (lo + hi) / 2
        p = torch.softmax(c * BASE.double(), dim=-1)
        lo, hi = (c, hi) if float(-(p * p.log()).sum()) > target else (lo, c)
    return (lo * BASE).float()


def run_one(spec: ReasoningSpec, entropies: list[float], sampled: list[int] | None = None,
            max_new_tokens: int = 64):
    """Drives one slot (slot 2 of 4) through the steps; returns kinds, tokens, finished, state."""
    sampled = sampled or [X] * len(entropies)
    state = ReasoningState(4, TOKENS, V)
    state.reset_slots([2], [spec], [max_new_tokens])
    kinds, toks, done, embeds = "", [], [], []
    for h, s in zip(entropies, sampled):
        out = state.step(torch.tensor([2]), logits_with_entropy(h)[None], torch.tensor([s]), WEIGHT)
        kinds += "L" if bool(out.is_latent[0]) else "E"
        toks.append(int(out.next_token[0]))
        done.append(bool(out.finished[0]))
        embeds.append(out.next_embeds[0])
    return kinds, toks, done, embeds, state


S, LAT, EXP = "switch", "latent", "explicit"
# (line of the spec, spec kwargs, entropies, sampled tokens (None: X every step), expected kinds,
#  expected emitted tokens (None: as sampled), expected stats subset)
ROWS = [
    ("a request starts latent", {"mode": S}, [2.0, 2.5, 3.0], None, "LLL", None,
     {"switches": 0, "latent_steps": 3}),
    ("latent->explicit as soon as H < H_ref", {"mode": S}, [2.0, 1.5, 1.6], None, "LEE", None,
     {"switches": 1, "explicit_steps": 2}),
    ("explicit->latent needs window steps and H > H_ref", {"mode": S, "window": 2},
     [2.0, 1.5, 3.0, 3.0, 3.1], None, "LEELL", None, {"switches": 1}),
    ("explicit->latent blocked before the window", {"mode": S, "window": 3},
     [2.0, 1.5, 3.0, 3.0], None, "LEEE", None, {"switches": 1}),
    ("explicit->latent needs H > H_ref", {"mode": S, "window": 1},
     [2.0, 1.5, 1.4, 1.45], None, "LEEE", None, {"switches": 1}),
    ("H_ref resets on a switch", {"mode": S, "window": 1},
     [2.0, 1.5, 3.0, 2.5, 2.0], None, "LELEE", None, {"switches": 2}),
    ("without </think> explicit returns to latent", {"mode": S, "window": 1},
     [2.0, 1.5, 3.0, 3.0], None, "LELL", None, {"switches": 1}),
    ("a sampled </think> locks explicit for good", {"mode": S, "window": 1},
     [2.0, 1.5, 3.0, 2.0], [X, END, X, X], "LEEE", None, {"switches": 1}),
    ("a sampled </think> while latent makes the rest explicit", {"mode": S},
     [2.0, 2.5, 2.5, 1.0], [X, END, X, X], "LEEE", None, {"switches": 1}),
    ("max_switches reached: queue convergence", {"mode": S, "window": 1, "max_switches": 1},
     [2.0, 1.0, 3.0], None, "LEL", [X, X, END], {"injected_convergence": True}),
    ("an injected convergence </think> does not lock", {"mode": S, "window": 1, "max_switches": 1},
     [2.0, 1.0, 0.9, 2.5, 2.5], None, "LEELL", [X, X, END, X, X], {"switches": 1}),
    ("no switch limit, no injection", {"mode": S, "window": 1},
     [2.0, 1.0, 3.0, 2.0, 3.0, 2.5], None, "LELELE", None,
     {"switches": 3, "injected_convergence": False}),
    ("> 2 * max_switches queues termination", {"mode": S, "window": 1, "max_switches": 1},
     [4.0, 3.5, 3.8, 3.0, 3.3, 2.0, 2.0, 2.0, 2.0, 2.0], None, "LELELEEEEE",
     [X, X, END, X, END, X, END, 20, 21, 22],
     {"switches": 3, "injected_convergence": True, "injected_termination": True}),
    ("latent mode never switches to explicit", {"mode": LAT}, [2.0, 1.0, 0.5, 0.2], None,
     "LLLL", None, {"switches": 0, "latent_steps": 4}),
    ("thinking budget injects a locking </think>", {"mode": LAT, "thinking_budget": 2},
     [2.0, 2.0, 2.0, 3.0], None, "LLEE", [X, X, END, X], {"forced_think_end": True}),
    ("thinking budget in switch mode", {"mode": S, "thinking_budget": 1, "window": 1},
     [2.0, 2.5, 3.0], None, "LEE", [X, END, X], {"forced_think_end": True}),
    ("no budget injection after a sampled </think>", {"mode": LAT, "thinking_budget": 2},
     [2.0, 2.0, 2.0], [END, X, X], "EEE", [END, X, X], {"forced_think_end": False}),
    ("cold stop after k low-entropy steps",
     {"mode": LAT, "cold_stop_threshold": 1.0, "cold_stop_steps": 2},
     [2.0, 0.5, 0.5, 2.0, 2.0], None, "LLLEE", [X, X, X, END, X], {"forced_think_end": True}),
    ("cold stop needs consecutive steps",
     {"mode": LAT, "cold_stop_threshold": 1.0, "cold_stop_steps": 2},
     [2.0, 0.5, 2.0, 0.5, 2.0], None, "LLLLL", None, {"forced_think_end": False}),
    ("math tokens are explicit steps", {"mode": S}, [2.0, 2.5, 3.0], [10, X, 11], "ELE", None,
     {"latent_steps": 1, "explicit_steps": 2}),
    ("math_tokens_explicit off", {"mode": S, "math_tokens_explicit": False}, [2.0, 2.5, 3.0],
     [10, X, 11], "LLL", None, {"latent_steps": 3}),
    ("explicit mode is plain decoding", {"mode": EXP}, [2.0, 1.0, 3.0], [X, END, 10], "EEE",
     None, {"explicit_steps": 3, "switches": 0}),
]


@pytest.mark.parametrize("line, kwargs, entropies, sampled, kinds, emitted, stats", ROWS,
                         ids=[r[0] for r in ROWS])
def test_state_machine(line, kwargs, entropies, sampled, kinds, emitted, stats) -> None:
    got_kinds, toks, _done, _, state = run_one(ReasoningSpec(**kwargs), entropies, sampled)
    assert got_kinds == kinds, line
    assert toks == (emitted or sampled or [X] * len(entropies)), line
    got_stats = state.stats([2])[0].to_json()
    assert {k: got_stats[k] for k in stats} == stats, line


def test_termination_budget_finishes_the_request() -> None:
    # Termination queued at step 5 with a budget of 4: the request ends 3 steps later (step 8).
    spec = ReasoningSpec(mode=S, window=1, max_switches=1, termination_budget=4)
    _, toks, done, _, _ = run_one(spec, [4.0, 3.5, 3.8, 3.0, 3.3, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert done.index(True) == 8 and toks[6:9] == [END, 20, 21]


@pytest.mark.parametrize("sampled, max_new, first_done", [([X, EOS, X], 8, 1), ([X] * 4, 3, 2)])
def test_finish_on_eos_and_max_new_tokens(sampled, max_new, first_done) -> None:
    _, _, done, _, _ = run_one(ReasoningSpec(mode=S), [2.0] * len(sampled), sampled, max_new)
    assert done.index(True) == first_done


def test_embeddings_follow_the_blend_formulas() -> None:
    spec = ReasoningSpec(mode=S, alpha0=0.5, beta0=0.6, window=1)
    entropies, n = [2.0, 1.5, 3.0], 10
    _, _, _, embeds, _ = run_one(spec, entropies, [X, 12, 13], max_new_tokens=n)
    soft = [torch.softmax(logits_with_entropy(h), -1) @ WEIGHT for h in entropies]
    a, b = 0.5 + 0.5 * 2 / n, 0.6 + 0.4 * 1 / n
    expected = [
        0.9 * soft[0] + 0.1 * WEIGHT[NL],  # step 0: latent, blended with "\\n"
        b * soft[1] + (1 - b) * WEIGHT[END],  # to_explicit: soft blended with </think>
        a * soft[2] + (1 - a) * WEIGHT[THINK],  # to_latent: soft blended with <think>
    ]
    for got, want in zip(embeds, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    explicit = run_one(ReasoningSpec(mode=EXP), [2.0, 1.0], [X, 12])[3]
    assert torch.equal(explicit[1], WEIGHT[12])  # explicit rows are exact lookups


def test_batch_with_mixed_modes_equals_single_slot_reference() -> None:
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(2)
    specs = {
        0: ReasoningSpec(mode=EXP),
        3: ReasoningSpec(mode=S, window=2),
        4: ReasoningSpec(mode=S, window=1, max_switches=1, termination_budget=3),
        5: ReasoningSpec(mode=LAT, thinking_budget=6),
        6: ReasoningSpec(mode=LAT, cold_stop_threshold=3.0, cold_stop_steps=2, alpha0=0.4),
        7: ReasoningSpec(mode=S, soft_topk=8, alpha0=0.5, window=1, math_tokens_explicit=False),
    }
    max_new = {slot: 24 + slot for slot in specs}
    state = ReasoningState(9, TOKENS, V)
    state.reset_slots(list(specs), list(specs.values()), list(max_new.values()))
    refs = {slot: SlotState() for slot in specs}
    live = set(specs)
    for _ in range(40):
        if not live:
            break
        batch = rng.sample(sorted(live), rng.randint(1, len(live)))  # any order, any subset
        scale = torch.rand(len(batch), 1, generator=gen) * 4  # spread the entropies
        logits = torch.randn(len(batch), V, generator=gen) * scale  # [B, V]
        sampled = torch.tensor([rng.choices([X, 10, 11, 40, END, EOS], [60, 8, 8, 20, 1, 1])[0]
                                for _ in batch])
        out = state.step(torch.tensor(batch), logits, sampled, WEIGHT)
        for i, slot in enumerate(batch):
            ref = swir_step(refs[slot], logits[i], int(sampled[i]), WEIGHT, TOKENS, specs[slot],
                            max_new[slot])
            assert int(out.next_token[i]) == ref.token, slot
            assert bool(out.is_latent[i]) == ref.is_latent, slot
            assert bool(out.finished[i]) == ref.finished, slot
            torch.testing.assert_close(out.next_embeds[i], ref.embed, atol=1e-5, rtol=1e-5)
            if ref.finished:
                live.discard(slot)
    got = state.stats(list(specs))
    for slot, stats in zip(specs, got):
        assert stats.to_json() == refs[slot].stats, slot
    assert got[2].injected_termination and got[3].forced_think_end  # the rows were exercised
    assert got[1].switches > 2 and got[5].latent_steps > 5


def test_release_returns_a_slot_to_explicit_decoding() -> None:
    state = ReasoningState(2, TOKENS, V)
    state.reset_slots([1], [ReasoningSpec(mode=LAT)], [8])
    state.release_slots([1])
    out = state.step(torch.tensor([1]), logits_with_entropy(2.0)[None], torch.tensor([X]), WEIGHT)
    assert not bool(out.is_latent[0]) and torch.equal(out.next_embeds[0], WEIGHT[X])


def test_cpu_without_interpreter_falls_back_to_torch_refs(monkeypatch) -> None:
    spec = ReasoningSpec(mode=S, window=1, alpha0=0.5, soft_topk=8)
    entropies, sampled = [2.0, 1.5, 3.0, 2.5], [X, 10, X, X]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    kernels = run_one(spec, entropies, sampled)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not ops.use_triton(torch.zeros(1))
    refs = run_one(spec, entropies, sampled)
    assert kernels[:3] == refs[:3]
    for a, b in zip(kernels[3], refs[3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_step_has_no_host_sync_on_gpu() -> None:
    state = ReasoningState(4, TOKENS, V, device="cuda")
    state.reset_slots([0, 1, 2], [ReasoningSpec(mode=S), ReasoningSpec(mode=LAT, soft_topk=4),
                                  ReasoningSpec(mode=EXP)], [16, 16, 16])
    weight = WEIGHT.cuda().bfloat16()
    idx, logits = torch.tensor([2, 0, 1], device="cuda"), torch.randn(3, V, device="cuda")
    sampled = torch.tensor([X, X, END], device="cuda")
    state.step(idx, logits, sampled, weight)  # compile the kernels first
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = state.step(idx, logits, sampled, weight)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.next_embeds.dtype == torch.bfloat16 and out.next_embeds.shape == (3, H)

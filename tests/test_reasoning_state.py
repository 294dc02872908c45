"""The SwiReasoning state machine on synthetic logits, each table row a line of SWIREASONING.md:
as the server runs it (`DeviceStep` driving the swir_step kernels; Triton's interpreter on CPU)
and as the plain specification states it (`reference.swir_step`).

Rows give the per-step entropy of the raw logits and the sampled token; the expected step kinds
read L (latent input) / E (explicit input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from rio_kernels.testing import poisoned_outputs  # noqa: F401 (autouse)
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.reference import SlotState, swir_step
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.reasoning.tokens import ReasoningTokens

V, H = 64, 16
THINK, END, EOS, NL, X = 1, 2, 3, 4, 30  # X: a plain, non-math token
TOKENS = ReasoningTokens(
    think_id=THINK, think_end_id=END, eos_id=EOS, newline_id=NL, math_ids=frozenset({10, 11}),
    convergence_ids=(END,), termination_ids=(END, 20, 21, 22),
)
WEIGHT = torch.randn(V, H, generator=torch.Generator().manual_seed(0))  # [V, H]
BASE = torch.randn(V, generator=torch.Generator().manual_seed(1))  # [V]
PAD = 7  # the token of a batch row that takes no reasoning step


def logits_with_entropy(target: float) -> torch.Tensor:
    """[V] logits c * BASE whose softmax entropy is `target` (entropy falls as c grows)."""
    assert 0 < target < math.log(V)
    lo, hi = 0.0, 100.0
    for _ in range(80):
        c = (lo + hi) / 2
        p = torch.softmax(c * BASE.double(), dim=-1)
        lo, hi = (c, hi) if float(-(p * p.log()).sum()) > target else (lo, c)
    return (lo * BASE).float()


@dataclass
class Run:
    kinds: str  # per step: L / E
    tokens: list[int]  # emitted
    embeds: list[torch.Tensor]  # [H] each: the next step's input
    stats: dict  # ReasoningStats.to_json()
    done: list[bool]  # reference: finished at this step
    recorded: list[int]  # kernel: the history column each step wrote (-1: none)


def run_kernel(spec: ReasoningSpec, entropies: list[float], sampled: list[int] | None = None,
               max_new_tokens: int = 64) -> Run:
    """Drives slot 2 of 4 through `DeviceStep` as the server does: each step's logits are row 1
    of a two-row batch, the sampled token is rewritten in place, the next input is the slot's
    `pending` row where `use` holds, else the emitted token's own row."""
    sampled = sampled or [X] * len(entropies)
    step = DeviceStep(4, TOKENS, V, WEIGHT, 0, V, WEIGHT[DeviceStep.special_rows(TOKENS)])
    step.reset([2], [spec], [max_new_tokens])
    rows, slots = torch.tensor([1]), torch.tensor([2])
    run = Run("", [], [], {}, [], [])
    for h, s in zip(entropies, sampled):
        logits = torch.stack([torch.randn(V), logits_with_entropy(h)])  # [2, V]
        tokens = torch.tensor([PAD, s])
        row_out = step.post(step.pre(logits, rows, slots), tokens)
        assert int(tokens[0]) == PAD  # the other row untouched
        run.kinds += "L" if int(row_out[0, 1]) else "E"
        run.tokens.append(int(tokens[1]))
        soft = bool(step.tables.use[2])
        run.embeds.append(step.tables.pending[2].clone() if soft else WEIGHT[run.tokens[-1]])
        run.recorded.append(int(row_out[0, 0]))
    finished = step.read_final(2)
    modes = finished.pop("modes")
    assert modes == "".join(k for k, r in zip(run.kinds, run.recorded) if r >= 0)
    run.stats = finished
    return run


def run_reference(spec: ReasoningSpec, entropies: list[float], sampled: list[int] | None = None,
                  max_new_tokens: int = 64) -> Run:
    """The same steps through the plain single-request `swir_step`, up to the finishing one."""
    sampled = sampled or [X] * len(entropies)
    st, run = SlotState(), Run("", [], [], {}, [], [])
    for h, s in zip(entropies, sampled):
        ref = swir_step(st, logits_with_entropy(h), s, WEIGHT, TOKENS, spec, max_new_tokens)
        run.kinds += "L" if ref.is_latent else "E"
        run.tokens.append(ref.token)
        run.embeds.append(ref.embed)
        run.done.append(ref.finished)
        if ref.finished:
            break
    run.stats = st.stats
    return run


RUNS = {"kernel": run_kernel, "reference": run_reference}


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


@pytest.mark.parametrize("driver", RUNS)
@pytest.mark.parametrize("line, kwargs, entropies, sampled, kinds, emitted, stats", ROWS,
                         ids=[r[0] for r in ROWS])
def test_state_machine(driver, line, kwargs, entropies, sampled, kinds, emitted, stats) -> None:
    run = RUNS[driver](ReasoningSpec(**kwargs), entropies, sampled)
    assert run.kinds == kinds, line
    assert run.tokens == (emitted or sampled or [X] * len(entropies)), line
    assert {k: run.stats[k] for k in stats} == stats, line


TERMINATION = [4.0, 3.5, 3.8, 3.0, 3.3, 2.0, 2.0, 2.0, 2.0, 2.0]  # termination queued at step 5


def test_termination_budget_finishes_the_request() -> None:
    # Termination queued at step 5 with a budget of 4: the request ends 3 steps later (step 8).
    spec = ReasoningSpec(mode=S, window=1, max_switches=1, termination_budget=4)
    ref = run_reference(spec, TERMINATION)
    assert ref.done.index(True) == 8 and ref.tokens[6:9] == [END, 20, 21]
    # The server's step emits EOS at the next step (SGLang finishes the request on it); that
    # step leaves the slot's state, statistics and mode history as they were.
    got = run_kernel(spec, TERMINATION)
    assert got.tokens[:9] == ref.tokens and got.tokens[9] == EOS
    assert got.recorded == list(range(9)) + [-1]
    assert got.stats == ref.stats and got.kinds[:9] == ref.kinds


@pytest.mark.parametrize("sampled, max_new, first_done", [([X, EOS, X], 8, 1), ([X] * 4, 3, 2)])
def test_finish_on_eos_and_max_new_tokens(sampled, max_new, first_done) -> None:
    ref = run_reference(ReasoningSpec(mode=S), [2.0] * len(sampled), sampled, max_new)
    assert ref.done.index(True) == first_done
    # the server finishes on the emitted EOS (and SGLang on max_new_tokens): the step emits it
    got = run_kernel(ReasoningSpec(mode=S), [2.0] * len(sampled), sampled, max_new)
    assert got.tokens == sampled


@pytest.mark.parametrize("driver", RUNS)
def test_embeddings_follow_the_blend_formulas(driver) -> None:
    spec = ReasoningSpec(mode=S, alpha0=0.5, beta0=0.6, window=1)
    entropies, n = [2.0, 1.5, 3.0], 10
    run = RUNS[driver](spec, entropies, [X, 12, 13], max_new_tokens=n)
    soft = [torch.softmax(logits_with_entropy(h), -1) @ WEIGHT for h in entropies]
    a, b = 0.5 + 0.5 * 2 / n, 0.6 + 0.4 * 1 / n
    expected = [
        0.9 * soft[0] + 0.1 * WEIGHT[NL],  # step 0: latent, blended with "\\n"
        b * soft[1] + (1 - b) * WEIGHT[END],  # to_explicit: soft blended with </think>
        a * soft[2] + (1 - a) * WEIGHT[THINK],  # to_latent: soft blended with <think>
    ]
    for got, want in zip(run.embeds, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    explicit = RUNS[driver](ReasoningSpec(mode=EXP), [2.0, 1.0], [X, 12]).embeds
    assert torch.equal(explicit[1], WEIGHT[12])  # explicit rows are exact lookups


def test_release_returns_a_slot_to_explicit_decoding() -> None:
    step = DeviceStep(2, TOKENS, V, WEIGHT, 0, V, WEIGHT[DeviceStep.special_rows(TOKENS)])
    step.reset([1], [ReasoningSpec(mode=LAT)], [8])
    step.release([1])
    assert not bool(step.soft_input(torch.tensor([1]))[0])
    tokens = torch.tensor([X])
    row_out = step.post(step.pre(logits_with_entropy(2.0)[None], torch.tensor([0]),
                                 torch.tensor([1])), tokens)
    assert int(tokens[0]) == X and int(row_out[0, 1]) == 0  # emitted as sampled, explicit
    assert int(step.tables.use[1]) == 0  # the forward embeds the token itself

"""A latent / switch request that SGLang retracts resumes exactly (issue 32), below the server:
the runtime's journal (`runtime/journal.py`) keeps each request's states and soft inputs, and a
retracted request restored into another slot continues as if never interrupted; explicit
requests are retracted first; a spent answer budget ends a request whatever `ignore_eos` says.

The server test is tests/test_retraction_server.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rio_kernels.testing import poisoned_outputs  # noqa: F401 (autouse)
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.reasoning.tokens import ReasoningTokens
from rio_sglang.runtime import hooks
from rio_sglang.runtime.journal import Journal
from rio_sglang.runtime.record import Record
from rio_sglang.runtime.sampler import HostRelay, ReasoningRuntime

V, H = 64, 16
THINK, END, EOS, NL = 1, 2, 3, 4
TOKENS = ReasoningTokens(
    think_id=THINK, think_end_id=END, eos_id=EOS, newline_id=NL, math_ids=frozenset({10, 11}),
    convergence_ids=(END,), termination_ids=(END, 20, 21),
)
STEPS, SLOTS, MAX_NEW = 24, 8, 64
MIB = 2**20
SWITCHY = {"mode": "switch", "window": 1, "max_switches": 1, "termination_budget": 3,
           "math_tokens_explicit": False}
# name, spec, the step after which SGLang retracts it (its committed tokens), whether the device
# ran one step past them (SGLang's overlap scheduler drops that token), journal bound (MiB)
CASES = [
    ("latent, retracted at 9", {"mode": "latent", "math_tokens_explicit": False}, 9, False, 1),
    ("latent, device one step ahead", {"mode": "latent"}, 9, True, 1),
    ("switch through termination, retracted at 5", SWITCHY, 5, False, 1),
    ("switch, retracted at 1 (its first token only)", SWITCHY, 1, True, 1),
    ("switch, soft top-k", {"mode": "switch", "window": 2, "soft_topk": 4}, 12, True, 1),
    ("latent, bound 0: resumes from tokens", {"mode": "latent"}, 9, False, 0),
]


def runtime(bound_mib: float) -> ReasoningRuntime:
    weight = torch.randn(V, H, generator=torch.Generator().manual_seed(1))
    step = DeviceStep(SLOTS, TOKENS, V, weight, 0, V, weight[DeviceStep.special_rows(TOKENS)])
    return ReasoningRuntime(step, relay_to_first_stage=False,
                            journal=Journal("cpu", int(bound_mib * MIB)))


def inputs(seed: int) -> list[tuple[torch.Tensor, int]]:
    """Per step: [1, V] logits, their entropy high and low by turns for the first 8 steps (a
    switch request switches both ways, never near a tie, up to its termination) and low after
    (its answer budget runs out), and a plain token sampled (no `</think>` that would lock)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in range(STEPS):
        scale = 0.05 if t % 2 == 0 and t < 8 else 12.0
        logits = torch.randn(1, V, generator=gen) * scale
        out.append((logits, int(torch.randint(30, 60, (1,), generator=gen))))
    return out


def admit(rt: ReasoningRuntime, record: Record, slot: int) -> None:
    """What hooks.init_new does for one request: claim, reset, resume a retracted one."""
    resume = record.retracted
    reset, release = rt.claim(record, slot)
    if release:
        rt.release(release)
    if reset:
        rt.reset([slot], [record.spec], [MAX_NEW])
    if resume:
        rt.resume(record, slot)


def step(rt: ReasoningRuntime, record: Record, logits: torch.Tensor, token: int
         ) -> tuple[int, torch.Tensor, int, int]:
    """One reasoning step of the request alone in a batch: (emitted token, its slot's next
    input, whether that input is soft, batch row ended by its answer budget or -1)."""
    rows = rt.rows([0], [record.slot], [record])
    pre = rt.before_sample(rows, logits)
    sampled = torch.tensor([token])
    relay = rt.after_sample(rows, pre, sampled)
    rt.journal.drain()
    t = rt.device.tables
    return (int(sampled[0]), t.pending[record.slot].clone(), int(t.use[record.slot]),
            int(relay.ended[0]))


def same(steps, solo) -> bool:
    """Emitted tokens, soft or not, ended or not, and each soft next input, equal."""
    return len(steps) == len(solo) and all(
        (a[0], a[2], a[3]) == (b[0], b[2], b[3]) and (not a[2] or torch.equal(a[1], b[1]))
        for a, b in zip(steps, solo))


@pytest.mark.parametrize("spec,at,ahead,bound", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_retracted_request_resumes_where_it_was(one_thread, spec, at, ahead, bound):
    spec = ReasoningSpec.from_json(spec)
    run = inputs(seed=at * 7 + len(spec.mode))
    # Alone, never retracted, in slot 1 (a neighbour in slot 2 shares its batches' runtime).
    solo_rt = runtime(bound)
    solo = Record("solo", spec, False)
    admit(solo_rt, solo, 1)
    solo_steps = [step(solo_rt, solo, *x) for x in run]
    solo_stats = solo_rt.final_stats(solo)

    rt = runtime(bound)
    req = Record("r", spec, False, rt)
    admit(rt, req, 1)
    first = [step(rt, req, *x) for x in run[: at + ahead]]
    assert same(first, solo_steps[: at + ahead])
    # SGLang retracts it (Req.reset_for_retract), frees slot 1, which another request takes;
    # the retracted one is prefilled again in slot 5 with its `at` committed tokens.
    prompt = [5, 6, 7]
    sglang_req = SimpleNamespace(rio_reasoning=req, output_ids=[0] * at, origin_input_ids=prompt,
                                 positional_embed_overrides=None)
    hooks.retracted(None, sglang_req)
    other = Record("other", ReasoningSpec(mode="latent"), False, rt)
    admit(rt, other, 1)
    step(rt, other, *run[0])
    admit(rt, req, 5)
    assert req.slot == 5 and rt.holders[5] is req and rt.holders[1] is other
    # what its prefill feeds its output positions (SGLang's positional embedding overrides)
    fed = {len(prompt) + k: pending for k, (_, pending, use, _) in enumerate(solo_steps[:at])
           if use}
    overrides = sglang_req.positional_embed_overrides
    if bound:
        assert overrides.positions == sorted(fed)
        assert all(torch.equal(row, fed[p]) for p, row in zip(overrides.positions,
                                                              overrides.embeds))
        assert not req.resumed_from_tokens
    else:
        assert overrides is None and req.resumed_from_tokens
    assert fed, "no latent step before the retraction: the case tests nothing"
    rest = [step(rt, req, *x) for x in run[at:]]
    assert same(rest, solo_steps[at:])
    assert rt.final_stats(req) == solo_stats
    assert req.trajectory is None and rt.journal.used == other.trajectory.soft_bytes


def test_switch_cases_reach_termination_and_the_budget():
    """The switch cases above pass through injected termination and a spent answer budget."""
    rt = runtime(1)
    rec = Record("r", ReasoningSpec.from_json(SWITCHY), False, rt)
    admit(rt, rec, 1)
    ended = [step(rt, rec, *x)[3] for x in inputs(seed=5 * 7 + len("switch"))]
    stats = rt.final_stats(rec)
    assert stats["injected_termination"] and ended.count(0) >= 1 and ended[0] == -1


def test_the_bound_drops_soft_inputs_and_says_so(one_thread):
    """Past the bound a request keeps its states but no soft input: it resumes from tokens."""
    row_bytes = H * 4  # fp32 rows here
    rt = runtime(3 * row_bytes / MIB)
    rec = Record("r", ReasoningSpec(mode="latent", math_tokens_explicit=False), False, rt)
    admit(rt, rec, 1)
    for x in inputs(seed=3)[:6]:
        step(rt, rec, *x)
    traj = rec.trajectory
    assert traj.lost and traj.soft == {} and rt.journal.used == 0
    assert sorted(traj.states) == [2, 3, 4, 5] and traj.steps == 6  # the newest states


def test_a_finished_request_frees_its_trajectory(one_thread):
    rt = runtime(1)
    recs = [Record(f"r{i}", ReasoningSpec(mode="latent"), False, rt) for i in range(2)]
    for i, rec in enumerate(recs):
        admit(rt, rec, i + 1)
        step(rt, rec, *inputs(seed=i)[0])
    assert rt.journal.used == sum(r.trajectory.soft_bytes for r in recs) > 0
    recs[0].finish(1, 0)
    recs[1].abort()
    assert rt.journal.used == 0 and all(r.trajectory is None for r in recs)


# request kinds in a decode batch (SGLang's keep-order), and the order ours keeps them in
ORDERS = [
    ("explicit requests go first", "ELSE", "LS" + "EE"),
    ("latent ones keep SGLang's order", "SLEL", "SLL" + "E"),
    ("no record yet counts as explicit", "L-", "L-"),
    ("all latent: unchanged", "LLS", "LLS"),
]


@pytest.mark.parametrize("kinds,kept", [o[1:] for o in ORDERS], ids=[o[0] for o in ORDERS])
def test_explicit_requests_are_retracted_first(monkeypatch, kinds, kept):
    """`ScheduleBatch._get_decode_retraction_order` lists requests most-preferred to keep
    first (SGLang retracts from the tail): ours moves explicit requests to the tail."""
    from sglang.srt import runtime_context

    mode = {"E": "explicit", "L": "latent", "S": "switch"}
    reqs = [SimpleNamespace(rio_reasoning=None if k == "-" else
                            Record(str(i), ReasoningSpec(mode=mode[k]), False))
            for i, k in enumerate(kinds)]
    monkeypatch.setattr(runtime_context, "get_schedule",
                        lambda: SimpleNamespace(retraction_policy="fcfs"))
    order = hooks.retraction_order(lambda rs: list(range(len(rs))), reqs)
    assert "".join(kinds[i] for i in order) == kept
    monkeypatch.setattr(runtime_context, "get_schedule",
                        lambda: SimpleNamespace(retraction_policy="priority"))
    assert hooks.retraction_order(lambda rs: list(range(len(rs))), reqs) == list(
        range(len(kinds)))


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_a_spent_answer_budget_ends_the_request(ignore_eos):
    """SGLang's own Req: the row the step says was spent finishes with the EOS it emitted,
    naming the budget, `ignore_eos` or not; another row is left to SGLang's rules."""
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.sampling.sampling_params import SamplingParams

    reqs = []
    for i in range(2):
        params = SamplingParams(max_new_tokens=50, ignore_eos=ignore_eos)
        params.normalize(None)  # as SGLang's tokenizer manager does
        reqs.append(Req(f"r{i}", "", [5, 6], params, eos_token_ids={EOS}))
    batch = SimpleNamespace(reqs=reqs)
    result = SimpleNamespace(auxiliary_host_output=HostRelay(torch.tensor([-1, 1]), EOS))
    for req in reqs:
        req.output_ids.append(7)  # an earlier token
    hooks.answer_budgets(None, None, batch, result)  # before SGLang commits the step's tokens
    for req in reqs:
        req.output_ids.append(EOS)  # the step's token, as SGLang commits it
        req.update_finish_state()
    assert reqs[1].finished_reason.to_json() == {"type": "stop", "matched": EOS,
                                                 "reason": "answer_budget"}
    assert reqs[1].finished_len is None  # its output keeps the EOS, as a matched stop token
    if ignore_eos:
        assert not reqs[0].finished()
    else:
        assert reqs[0].finished_reason.to_json() == {"type": "stop", "matched": EOS}

"""The fused SwiReasoning step (`rio_kernels.swir_step` through `reasoning.device.DeviceStep`)
against its plain-torch twins: the logits passes against `swir_step/ref.py`, the whole step
against the single-request reference `reasoning.reference.swir_step`, row by row, in mixed
batches. CPU: Triton interpreter, fp32 / fp16 tables; the bf16 path runs in the gpu rows. Every
buffer the kernels write starts poisoned (rio_kernels.testing): partial mixtures a row need not
write stay NaN, and a row that reads one fails."""

from __future__ import annotations

import random

import pytest
import torch

from rio_kernels.swir_step.ref import lse_entropy_ref, mix_ref
from rio_kernels.testing import poisoned_outputs  # noqa: F401 (autouse)
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.reference import SlotState, swir_step
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.reasoning.tokens import ReasoningTokens

V, H = 517, 40  # neither a block multiple
THINK, END, EOS, NL, X = 1, 2, 3, 4, 30
TOKENS = ReasoningTokens(
    think_id=THINK, think_end_id=END, eos_id=EOS, newline_id=NL, math_ids=frozenset({10, 11}),
    convergence_ids=(END,), termination_ids=(END, 20, 21, 22),
)
WEIGHT = torch.randn(V, H, generator=torch.Generator().manual_seed(0))  # [V, H] fp32
S, LAT, EXP = "switch", "latent", "explicit"


def device_step(weight: torch.Tensor, slots: int = 9, v_start: int = 0, v_len: int = V,
                all_reduce=None) -> DeviceStep:
    special = weight[DeviceStep.special_rows(TOKENS)]
    return DeviceStep(slots, TOKENS, V, weight[v_start:v_start + v_len], v_start, v_len,
                      special, all_reduce)


def logits_case(kind: str, B: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, V, generator=g) * 3  # [B, V]
    if kind == "extreme":
        z[:, ::7] = 3e4  # far beyond exp's range: only the max matters
        z[:, 1::7] = -3e4
    elif kind == "masked":
        z[:, ::2] = float("-inf")  # a grammar-style -inf mask over half the vocabulary
    elif kind == "one-hot":
        z.fill_(float("-inf"))
        z[:, 5] = 0.0  # entropy 0
    return z


@pytest.mark.parametrize("kind, B, dtype, shard", [
    ("plain", 1, torch.float32, (0, V)),
    ("plain", 5, torch.float16, (200, 170)),  # a vocab shard, as under TP
    ("plain", 33, torch.float32, (0, V)),  # more rows than one 16-row tile... and < 64
    ("plain", 70, torch.float16, (0, V)),  # two row blocks
    ("extreme", 5, torch.float32, (0, V)),
    ("extreme", 1, torch.float16, (200, 170)),
    ("masked", 5, torch.float32, (200, 170)),
    ("one-hot", 1, torch.float32, (0, V)),
])
def test_logits_passes_match_ref(kind, B, dtype, shard):
    logits = logits_case(kind, B, seed=B)
    if dtype == torch.float16 and kind == "extreme":
        logits = logits.clamp(-6e4, 6e4)  # representable in the model dtype
    weight = WEIGHT.to(dtype)
    step = device_step(weight, slots=B + 3, v_start=shard[0], v_len=shard[1])
    slots = list(range(3, 3 + B))
    step.reset(slots, [ReasoningSpec(mode=LAT)] * B, [8] * B)  # fresh latent: every row mixes
    rows = torch.arange(B - 1, -1, -1)  # the batch rows in reverse: rows and slots differ
    pre = step.pre(logits, rows, torch.tensor(slots))
    top = pre.m.max(1, keepdim=True).values  # [B, 1]
    scale = torch.where(pre.s > 0, torch.exp(pre.m - top), 0.0)  # per-chunk rebasing
    shift = torch.where(pre.s > 0, pre.m - top, 0.0)
    s, t = (pre.s * scale).sum(1), (scale * (pre.t + pre.s * shift)).sum(1)
    lse, ent = lse_entropy_ref(logits[rows], dtype)
    torch.testing.assert_close(top[:, 0] + torch.log(s), lse, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(torch.log(s) - t / s, ent, atol=1e-4, rtol=1e-4)
    v_start, v_len = shard
    want = mix_ref(logits[rows], weight[v_start:v_start + v_len], v_start, v_len)  # [B, H]
    torch.testing.assert_close(pre.partials.sum(0), want, atol=1e-4, rtol=1e-4)


def test_mixture_shards_sum_to_the_whole_table():
    logits = logits_case("plain", 4, seed=1)
    full = mix_ref(logits, WEIGHT, 0, V)
    parts = []
    for v_start, v_len in ((0, 300), (300, V - 300)):
        step = device_step(WEIGHT, v_start=v_start, v_len=v_len)
        step.reset([0, 1, 2, 3], [ReasoningSpec(mode=LAT)] * 4, [8] * 4)
        parts.append(step.pre(logits, torch.arange(4), torch.arange(4)).partials.sum(0))
    torch.testing.assert_close(parts[0] + parts[1], full, atol=1e-4, rtol=1e-4)


def test_no_soft_rows_read_no_table():
    """Rows locked explicit (a sampled `</think>`) or explicit requests: every mixture program
    exits before writing, and the step never reads a partial (they stay NaN)."""
    step = device_step(WEIGHT)
    step.reset([1, 2], [ReasoningSpec(mode=S), ReasoningSpec(mode=LAT)], [8, 8])
    logits = logits_case("plain", 2, seed=3)
    first = step.pre(logits, torch.arange(2), torch.tensor([1, 2]))
    step.post(first, torch.tensor([END, END]))  # both sample `</think>`: locked explicit
    second = step.pre(logits, torch.arange(2), torch.tensor([1, 2]))
    assert torch.isnan(second.partials).all()
    tokens = torch.tensor([X, 12])
    row_out = step.post(second, tokens)
    assert tokens.tolist() == [X, 12] and row_out[:, 1].tolist() == [0, 0]
    assert step.tables.use[[1, 2]].tolist() == [0, 0]
    assert torch.isfinite(step.tables.pending[[1, 2]].float()).all()


SPECS = {
    0: ReasoningSpec(mode=EXP),
    3: ReasoningSpec(mode=S, window=2),
    4: ReasoningSpec(mode=S, window=1, max_switches=1, termination_budget=3),
    5: ReasoningSpec(mode=LAT, thinking_budget=6),
    6: ReasoningSpec(mode=LAT, cold_stop_threshold=3.0, cold_stop_steps=2, alpha0=0.4),
    7: ReasoningSpec(mode=S, soft_topk=8, alpha0=0.5, window=1, math_tokens_explicit=False),
    8: ReasoningSpec(mode=S, window=1, beta0=0.3),
}


@pytest.mark.parametrize("dtype, seed", [(torch.float32, 0), (torch.float16, 1)])
def test_mixed_batch_equals_single_request_reference(dtype, seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    weight = WEIGHT.to(dtype)
    max_new = {slot: 24 + slot for slot in SPECS}
    step = device_step(weight)
    step.reset(list(SPECS), list(SPECS.values()), list(max_new.values()))
    refs = {slot: SlotState() for slot in SPECS}
    live, seen_latent, seen_explicit_soft = set(SPECS), 0, 0
    for _ in range(40):
        if not live:
            break
        batch = rng.sample(sorted(live), rng.randint(1, len(live)))  # any order, any subset
        scale = torch.rand(len(batch), 1, generator=gen) * 4  # spread the entropies
        logits = (torch.randn(len(batch), V, generator=gen) * scale).to(dtype).float()
        sampled = [rng.choices([X, 10, 11, 40, END, EOS], [60, 8, 8, 20, 1, 1])[0] for _ in batch]
        pad = 2  # the batch holds two more rows that take no reasoning step
        rows = torch.arange(len(batch)) + pad
        tokens = torch.tensor([7] * pad + sampled)
        big = torch.cat([torch.randn(pad, V), logits])
        pre = step.pre(big, rows, torch.tensor(batch))
        row_out = step.post(pre, tokens)
        assert tokens[:pad].tolist() == [7] * pad  # other rows untouched
        for i, slot in enumerate(batch):
            ref = swir_step(refs[slot], logits[i], sampled[i], weight, TOKENS, SPECS[slot],
                            max_new[slot])
            assert int(tokens[pad + i]) == ref.token, slot
            assert bool(row_out[i, 1]) == ref.is_latent, slot
            if bool(step.tables.use[slot]):
                got = step.tables.pending[slot].float()
                torch.testing.assert_close(got, ref.embed.to(dtype).float(), atol=2e-3,
                                           rtol=2e-3)
                seen_latent += ref.is_latent
                seen_explicit_soft += not ref.is_latent
            else:  # the forward embeds the emitted token itself
                assert not ref.is_latent and torch.equal(ref.embed, weight[ref.token].float())
            if ref.finished:
                live.discard(slot)
    for slot in SPECS:
        got = step.read_final(slot)
        assert {k: v for k, v in got.items() if k != "modes"} == refs[slot].stats, slot
    assert seen_latent > 10 and seen_explicit_soft > 0  # latent and `to_explicit` blends ran
    assert any(r.stats["injected_termination"] or r.stats["forced_think_end"]
               for r in refs.values())  # an injection ran
    assert refs[4].stats["injected_termination"]  # its limit of 1 switch was passed


def test_history_and_relay_publish_on_another_stage():
    """Pipeline parallelism: the last stage steps; the first publishes its relay and reports
    the same statistics and modes."""
    last, first = device_step(WEIGHT), device_step(WEIGHT)
    spec = ReasoningSpec(mode=S, window=1)
    for st in (last, first):
        st.reset([2], [spec], [16])
    gen = torch.Generator().manual_seed(5)
    for _ in range(6):
        logits = torch.randn(1, V, generator=gen) * float(torch.rand(1, generator=gen) * 4)
        pre = last.pre(logits, torch.tensor([0]), torch.tensor([2]))
        row_out = last.post(pre, torch.tensor([X]))
        first.publish(last.relay(torch.tensor([2]), row_out))
        assert torch.equal(first.tables.pending[2], last.tables.pending[2])
        assert first.tables.use[2] == last.tables.use[2]
    assert first.read_final(2) == last.read_final(2)


@pytest.mark.gpu
def test_gpu_bf16_step_has_no_host_sync_and_captures():
    """bf16 tables (the split-p tensor-core path) against the reference; the whole step under
    `set_sync_debug_mode("error")`, then captured in a CUDA graph and replayed."""
    weight = WEIGHT.cuda().bfloat16()
    step = device_step(weight)
    step.reset([1, 2, 3], [ReasoningSpec(mode=LAT), ReasoningSpec(mode=S, window=1),
                           ReasoningSpec(mode=LAT, soft_topk=4)], [16] * 3)
    logits = logits_case("plain", 3, seed=7).cuda()
    rows, slots = torch.arange(3, device="cuda"), torch.tensor([1, 2, 3], device="cuda")
    ref = {slot: SlotState() for slot in (1, 2, 3)}
    tokens = torch.tensor([X, X, X], device="cuda")
    step.post(step.pre(logits, rows, slots), tokens)  # compile first
    for i, slot in enumerate((1, 2, 3)):
        spec = [ReasoningSpec(mode=LAT), ReasoningSpec(mode=S, window=1),
                ReasoningSpec(mode=LAT, soft_topk=4)][i]
        want = swir_step(ref[slot], logits[i].cpu(), X, weight.cpu(), TOKENS, spec, 16)
        torch.testing.assert_close(step.tables.pending[slot].float().cpu(),
                                   want.embed.bfloat16().float(), atol=2e-2, rtol=2e-2)
    torch.cuda.set_sync_debug_mode("error")
    try:
        step.post(step.pre(logits, rows, slots), tokens)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step.post(step.pre(logits, rows, slots), tokens)
    before = step.state.t["step"][1].item()
    graph.replay()
    torch.cuda.synchronize()
    assert step.state.t["step"][1].item() == before + 1


@pytest.mark.gpu
def test_gpu_runtime_step_with_its_journal_has_no_host_sync():
    """The server's whole step as `rio_sglang/runtime/sampler.py` runs it after SGLang's sampler:
    the step, the spent-budget rows, and the journal's copies of states and next inputs to
    pinned host memory (exact resumption after a retraction), under
    `set_sync_debug_mode("error")`; once filed, the kept input is the device's own."""
    from types import SimpleNamespace

    from rio_sglang.runtime.journal import Journal
    from rio_sglang.runtime.sampler import ReasoningRuntime

    weight = WEIGHT.cuda().bfloat16()
    runtime = ReasoningRuntime(device_step(weight), relay_to_first_stage=False,
                               journal=Journal("cuda", 1 << 20))
    specs = [ReasoningSpec(mode=LAT), ReasoningSpec(mode=S, window=1)]
    runtime.reset([1, 2], specs, [16] * 2)
    records = [SimpleNamespace(closed=False, trajectory=None) for _ in specs]
    logits = logits_case("plain", 2, seed=3).cuda()
    tokens = torch.tensor([X, X], device="cuda")
    rows = runtime.rows([0, 1], [1, 2], records)
    runtime.after_sample(rows, runtime.before_sample(rows, logits), tokens.clone())  # compile
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        relay = runtime.after_sample(rows, runtime.before_sample(rows, logits), tokens.clone())
        runtime.journal.drain()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    runtime.journal.drain(wait=True)
    assert relay.ended.tolist() == [-1, -1]
    traj = records[0].trajectory
    assert traj.steps == 2 and sorted(traj.states) == [0, 1]
    assert torch.equal(traj.soft[1], runtime.device.tables.pending[1].cpu())


@pytest.mark.gpu
def test_gpu_rio_shard_mixture_is_deterministic():
    """One rank's TP 8 vocab shard at Rio's hidden size, the GPU tiles: the tickets' in-order
    sums give the same bits twice, equal to the fp32 reference, and the counters end at 0."""
    from rio_kernels.swir_step import launch

    B, v, h = 8, 31_040, 4096
    g = torch.Generator(device="cuda").manual_seed(0)
    table = (torch.randn(v, h, device="cuda", generator=g) * 0.02).bfloat16()
    logits = torch.randn(B, 8 * v, device="cuda", generator=g) * 4
    special = table[:3]
    step = DeviceStep(B, TOKENS, 8 * v, table, 0, v, special)
    step.reset(list(range(B)), [ReasoningSpec(mode=LAT)] * B, [8] * B)
    rows = torch.arange(B, device="cuda")
    a = launch.pre_sample(logits, rows, rows, step.tables, table, 0, v, 8 * v)
    b = launch.pre_sample(logits, rows, rows, step.tables, table, 0, v, 8 * v)
    torch.cuda.synchronize()
    assert torch.equal(a.partials, b.partials) and not step.tables.tickets.any()
    want = mix_ref(logits, table, 0, v)
    err = (a.partials[0] - want).abs().max().item()
    assert err <= 1e-3 * want.abs().max().item(), err


def test_a_relay_landing_after_release_feeds_no_later_request():
    """PP: the last stage's relay for a request's final step may reach the first stage after
    that request finished there; its slot's next request (explicit) must embed its tokens."""
    last, first = device_step(WEIGHT), device_step(WEIGHT)
    for st in (last, first):
        st.reset([2], [ReasoningSpec(mode=LAT)], [16])
    pre = last.pre(logits_case("plain", 1, seed=9), torch.tensor([0]), torch.tensor([2]))
    relay = last.relay(torch.tensor([2]), last.post(pre, torch.tensor([X])))
    assert bool(last.soft_input(torch.tensor([2]))[0])  # a latent step: soft next input
    first.read_final(2)  # the request ended on the first stage...
    first.publish(relay)  # ...before its last relay arrived
    assert not bool(first.soft_input(torch.tensor([2]))[0])

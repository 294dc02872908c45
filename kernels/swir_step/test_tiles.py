"""The fused step's kernels at the GPU's tile shapes, under the Triton interpreter: stats chunks
of several loads (the running max re-based between them), mixtures split over vocab, hidden
and row blocks whose last program per tile sums the splits (tickets), and the opt-ins: the
copy of the logits the mixture can read (launch.COPY_LOGITS) and the mixture's dependent
launch (launch.PDL, GPU only). The shared cases and the poisoned-buffer fixture are
test_swir_step.py's."""

from __future__ import annotations

import pytest
import torch

from rio_kernels.swir_step import launch
from rio_kernels.swir_step import test_swir_step as base
from rio_kernels.swir_step.ref import lse_entropy_ref, mix_ref
from rio_kernels.swir_step.test_swir_step import (
    EXP,
    LAT,
    TOKENS,
    WEIGHT,
    H,
    S,
    V,
    X,
    device_step,
    logits_case,
)
from rio_kernels.testing import poisoned_outputs  # noqa: F401 (autouse)
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.spec import ReasoningSpec


@pytest.mark.parametrize("kind, B, tiles", [
    ("plain", 3, (256, 64, 4)),  # four loads per program, the last chunk past V
    ("masked", 2, (512, 64, 4)),  # one program holds all of V: eight loads
    ("leading-inf", 2, (256, 64, 4)),  # a chunk's first loads all -inf, then finite ones
    ("extreme", 3, (128, 32, 4)),
    ("one-hot", 1, (256, 64, 4)),  # one finite logit in one load of one chunk
])
def test_stats_chunks_of_several_loads_match_ref(kind, B, tiles):
    """The stats pass re-bases its running sums when a later load in a chunk raises the max
    (the GPU tiles load 1-4 times per chunk; the CPU default loads once at this V)."""
    logits = logits_case("masked" if kind == "leading-inf" else kind, B, seed=B)
    if kind == "leading-inf":
        logits[:, :200] = float("-inf")  # chunk 0's first three loads, and part of its fourth
        logits[:, 230] = 40.0  # then a new max after finite ones
    step = device_step(WEIGHT, slots=B + 3)
    slots = torch.arange(3, 3 + B)
    rows = torch.arange(B - 1, -1, -1)
    row = launch.row_stats(logits, rows, slots, step.tables, V, torch.float32,
                           tiles=launch.StatsTiles(*tiles))[3]  # [B, 2] (lse, entropy)
    lse, ent = lse_entropy_ref(logits[rows], torch.float32)
    torch.testing.assert_close(row[:, 0], lse, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(row[:, 1], ent, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("B, tiles, shard, row_blocks", [
    (1, (16, 16, 4, 1, 64), (0, V), 1),  # one row: 3 hidden blocks x many vocab splits
    (5, (16, 32, 4, 1, 8), (200, 170), 1),  # a shard, splits not a block multiple
    (20, (32, 16, 4, 1, 16), (0, V), 1),  # one row block of 32
    (20, (32, 16, 4, 1, 16, 16), (0, V), 2),  # two row blocks of 16
    (40, (16, 32, 4, 1, 24, 16), (200, 170), 3),  # three, the last one partial, on a shard
])
def test_split_mixture_tickets_sum_in_order_and_reset(B, tiles, shard, row_blocks):
    """More than one vocab split, hidden block and row block (the GPU's grids): each tile's last
    split sums the splits; the counters are back at 0 and a second step gives the same bits."""
    logits = logits_case("plain", B, seed=B + 11)
    v_start, v_len = shard
    step = device_step(WEIGHT, slots=B + 1, v_start=v_start, v_len=v_len)
    step.reset(list(range(1, B + 1)), [ReasoningSpec(mode=LAT)] * B, [8] * B)
    rows, slots = torch.arange(B), torch.arange(1, B + 1)
    args = (logits, rows, slots, step.tables, step.table, v_start, v_len, V)
    mt = launch.MixTiles(*tiles)
    grid = launch.mix_grid(B, H, v_len, mt.block_h, mt.block_v, mt.target, mt.block_r)
    assert grid[2] > 1 and grid[4] == row_blocks  # vocab splits, row blocks
    first = launch.pre_sample(*args, tiles=mt)
    assert not step.tables.tickets.any()
    want = mix_ref(logits, WEIGHT[v_start:v_start + v_len], v_start, v_len)
    torch.testing.assert_close(first.partials[0], want, atol=1e-4, rtol=1e-4)
    lse, ent = lse_entropy_ref(logits, torch.float32)
    torch.testing.assert_close(first.row, torch.stack([lse, ent], 1), atol=1e-4, rtol=1e-4)
    assert first.need.tolist() == [1] * B
    second = launch.pre_sample(*args, tiles=mt)
    assert torch.equal(first.partials, second.partials) and not step.tables.tickets.any()


@pytest.mark.parametrize("kind, B, dtype, shard, modes, tiles", [
    ("plain", 1, torch.float16, (0, V), (LAT,), None),
    ("plain", 5, torch.float16, (200, 170), (LAT, S, EXP), None),  # a shard; an explicit row
    ("extreme", 3, torch.float32, (0, V), (S, LAT), None),
    ("masked", 4, torch.float16, (200, 170), (LAT,), None),
    ("one-hot", 2, torch.float16, (0, V), (LAT, EXP), None),
    ("plain", 6, torch.float16, (0, V), (EXP,), None),  # no row mixes: the copy is never read
    ("plain", 40, torch.float16, (200, 170), (LAT, S), (16, 32, 4, 1, 24, 16)),  # 3 row blocks
])
def test_logits_copy_gives_the_same_bits(monkeypatch, kind, B, dtype, shard, modes, tiles):
    """COPY_LOGITS: the mixture reads the stats pass's copy of the shard's logits in the table's
    dtype, the values it rounds them to anyway: the same statistics and mixtures, bit for bit.
    The copy's rows of explicit requests stay unwritten (poisoned), and nothing reads them."""
    logits = logits_case(kind, B, seed=B + 5)
    if dtype == torch.float16 and kind == "extreme":
        logits = logits.clamp(-6e4, 6e4)  # representable in the model dtype
    v_start, v_len = shard
    weight = WEIGHT.to(dtype)
    mt = launch.MixTiles(*tiles) if tiles else None
    outs = []
    for copy in (False, True):
        monkeypatch.setattr(launch, "COPY_LOGITS", copy)
        step = device_step(weight, slots=B + 1, v_start=v_start, v_len=v_len)
        step.reset(list(range(1, B + 1)), [ReasoningSpec(mode=modes[i % len(modes)])
                                           for i in range(B)], [8] * B)
        rows = torch.arange(B - 1, -1, -1)  # rows and slots differ
        outs.append(launch.pre_sample(logits, rows, torch.arange(1, B + 1), step.tables,
                                      step.table, v_start, v_len, V, tiles=mt))
    off, on = outs
    assert torch.equal(on.row, off.row) and torch.equal(on.need, off.need)
    need = off.need.bool()
    assert need.tolist() == [modes[i % len(modes)] != EXP for i in range(B)]
    assert torch.equal(on.partials[0][need], off.partials[0][need])
    want = mix_ref(logits[torch.arange(B - 1, -1, -1)], weight[v_start:v_start + v_len],
                   v_start, v_len)
    torch.testing.assert_close(on.partials[0][need], want[need], atol=1e-4, rtol=1e-4)


def test_mixed_batch_with_the_logits_copy_equals_the_reference(monkeypatch):
    """The whole step with COPY_LOGITS, against the single-request reference (fp16 tables)."""
    monkeypatch.setattr(launch, "COPY_LOGITS", True)
    base.test_mixed_batch_equals_single_request_reference(torch.float16, seed=2)


def test_step_pdl_never_reaches_the_interpreter(monkeypatch):
    """launch.PDL on a CPU: the interpreter has no griddepcontrol; the step is unchanged."""
    monkeypatch.setattr(launch, "PDL", True)
    base.test_mixed_batch_equals_single_request_reference(torch.float32, seed=3)


@pytest.mark.gpu
@pytest.mark.parametrize("flag", ["COPY_LOGITS", "PDL"])
def test_gpu_step_opt_ins_give_the_same_bits(monkeypatch, flag):
    """A Rio TP 8 shard in bf16, latent / switch / explicit rows: two steps with the opt-in on
    give the same tokens, next inputs and state as with it off, eager and (the second step)
    replayed from a CUDA graph."""
    B, v = 8, 31_040
    g = torch.Generator(device="cuda").manual_seed(1)
    table = (torch.randn(v, 4096, device="cuda", generator=g) * 0.02).bfloat16()
    logits = torch.randn(B, 8 * v, device="cuda", generator=g) * 4
    specs = [ReasoningSpec(mode=(LAT, S, EXP)[i % 3], window=1) for i in range(B)]

    def two_steps(on: bool, graphed: bool):
        monkeypatch.setattr(launch, flag, on)
        step = DeviceStep(B, TOKENS, 8 * v, table, 0, v, table[:3])
        step.reset(list(range(B)), specs, [8] * B)
        rows, tokens = torch.arange(B, device="cuda"), torch.full((B,), X, device="cuda")

        def once():
            step.post(step.pre(logits, rows, rows), tokens)
        once()  # compiles
        if graphed:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                once()
            graph.replay()
        else:
            once()
        torch.cuda.synchronize()
        return (tokens, step.tables.pending, step.tables.use, step.state.ints,
                step.tables.tickets)

    want = two_steps(False, False)
    for graphed in (False, True):
        got = two_steps(True, graphed)
        assert all(torch.equal(a, b) for a, b in zip(got, want)), (flag, graphed)
        assert not got[-1].any()  # the tickets are back at 0

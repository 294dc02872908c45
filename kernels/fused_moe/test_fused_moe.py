"""fused_moe (Triton) against fused_moe_ref on the shapes MoE kernels get wrong; ref checked by hand.

CPU: runs under TRITON_INTERPRET=1 in fp16/fp32; the bf16 case needs CUDA (marker gpu). Every
scratch buffer starts poisoned (rio_kernels.testing), so an unwritten row or index fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from rio_kernels.fused_moe import (
    MoeConfig,
    align,
    ep_expert_map,
    fp8,
    fused_moe,
    fused_moe_ref,
    grouped,
    route_topk,
    small_t,
)
from rio_kernels.testing import BF16, DEVICE, FP16, FP32, poisoned_outputs  # noqa: F401 (autouse)
from rio_kernels.testing import TOL_TWO_GEMMS as TOL


def make_inputs(T, H, I, E, topk, dtype, routing="random", seed=0):
    """Unit-scale x and weights scaled so out is O(1); routing as the model does it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g)  # [T, H]
    w13 = torch.randn(E, 2 * I, H, generator=g) / math.sqrt(H)  # [E, 2I, H]
    w2 = torch.randn(E, H, I, generator=g) / math.sqrt(I)  # [E, H, I]
    logits = torch.randn(T, E, generator=g)  # [T, E]
    if routing == "few_experts":
        logits[:, [1, E // 2, E - 1]] += 20.0
    if routing == "one_expert":
        logits[:, 3] += 20.0
    weights, ids = route_topk(logits, topk)  # [T, topk] fp32, [T, topk] int32
    if routing == "padded":
        ids[::2, 0] = -1
        ids[1::2, -1] = E
    to = {"device": DEVICE}
    return (x.to(dtype=dtype, **to), w13.to(dtype=dtype, **to), w2.to(dtype=dtype, **to),
            weights.to(**to), ids.to(**to))


def run_kernel(x, w13, w2, weights, ids, **kwargs):
    out = torch.full_like(x, float("nan"))
    return fused_moe(x, w13, w2, weights, ids, out=out, **kwargs)


def test_ref_by_hand():
    # x = [1, 2]. Expert 0: gate [1, 0] -> 1, up [0, 1] -> 2, h = silu(1) * 2 = 1.4621172,
    # down [[1], [-1]] -> [1.4621172, -1.4621172], weight 0.5 -> [0.7310586, -0.7310586].
    # Expert 1: gate [0, 1] -> 2, up [1, 1] -> 3, h = silu(2) * 3 = 5.2847824,
    # down [[2], [0]] -> [10.5695648, 0], weight 0.25 -> [2.6423912, 0].
    x = torch.tensor([[1.0, 2.0]])
    w13 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]])  # [E=2, 2I=2, H=2]
    w2 = torch.tensor([[[1.0], [-1.0]], [[2.0], [0.0]]])  # [E=2, H=2, I=1]
    weights = torch.tensor([[0.5, 0.25]])
    ids = torch.tensor([[0, 1]])
    out = fused_moe_ref(x, w13, w2, weights, ids)
    torch.testing.assert_close(out, torch.tensor([[3.3734498, -0.7310586]]))
    # Expert parallel, rank 1 of 2 holds expert 1 only: expert 0's slot contributes 0.
    emap = ep_expert_map(2, ep_rank=1, ep_size=2)
    out = fused_moe_ref(x, w13[1:], w2[1:], weights, ids, expert_map=emap)
    torch.testing.assert_close(out, torch.tensor([[2.6423912, 0.0]]))


@dataclass(frozen=True)
class Case:
    name: str
    T: int
    H: int
    I: int
    E: int
    topk: int
    dtype: torch.dtype = FP32
    routing: str = "random"
    config: MoeConfig | None = None


RAGGED = MoeConfig(block_m=16, block_n=16, block_k=32)
CASES = [
    Case("one token", T=1, H=32, I=16, E=8, topk=2),
    Case("one token fp16", T=1, H=32, I=16, E=8, topk=2, dtype=FP16),
    Case("7 tokens fp16", T=7, H=32, I=16, E=8, topk=2, dtype=FP16),
    Case("33 tokens, several blocks per expert", T=33, H=32, I=16, E=4, topk=2),
    Case("33 tokens fp16 top-4", T=33, H=32, I=16, E=8, topk=4, dtype=FP16),
    Case("experts with no tokens", T=9, H=32, I=16, E=16, topk=2, routing="few_experts"),
    Case("every token on one expert", T=37, H=32, I=16, E=8, topk=2, routing="one_expert"),
    Case("512 experts top-10", T=3, H=32, I=16, E=512, topk=10, dtype=FP16),
    Case("512 experts top-10 one token fp32", T=1, H=32, I=16, E=512, topk=10),
    Case("H, I not block multiples", T=5, H=72, I=40, E=4, topk=2, config=RAGGED),
    Case("H, I not block multiples fp16", T=5, H=72, I=40, E=4, topk=2, dtype=FP16, config=RAGGED),
    Case("H, I below one block", T=3, H=20, I=8, E=4, topk=2),
    Case("ids < 0 or >= E contribute 0", T=6, H=32, I=16, E=8, topk=2, routing="padded"),
    Case("block_m 32", T=11, H=32, I=16, E=4, topk=2, config=MoeConfig(block_m=32)),
]
# small_t: True = small-T path, False = grouped path (each case runs both).
PATHS = {"small": True, "grouped": False}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fused_moe_matches_ref(case: Case, path: str):
    x, w13, w2, weights, ids = make_inputs(case.T, case.H, case.I, case.E, case.topk,
                                           case.dtype, case.routing)
    out = run_kernel(x, w13, w2, weights, ids, config=case.config, small_t=PATHS[path])
    ref = fused_moe_ref(x, w13, w2, weights, ids)
    assert out.dtype == x.dtype and out.shape == (case.T, case.H)
    torch.testing.assert_close(out.float(), ref.float(), **TOL[case.dtype])


@pytest.mark.parametrize("inter,fp8_weights", [(16, False), (small_t.NARROW_I + 16, False),
                                               (small_t.NARROW_I + 16, True)])
@pytest.mark.parametrize("pairs_over_bound", [0, 1])
def test_small_t_bound_both_sides(monkeypatch, pairs_over_bound, inter, fp8_weights):
    # T * topk exactly at the bound takes the small-T path, one token more the grouped one
    # (narrow experts: 640 pairs; wide ones: 16, or their own e4m3 bound, here lowered from 320
    # to 32 to keep the interpreter quick while still above the bf16 bound).
    monkeypatch.setattr(small_t, "SMALL_T_MAX_PAIRS_WIDE_FP8", 32)
    topk = 4
    T = small_t.max_pairs(inter, 1 if fp8_weights else 2) // topk + pairs_over_bound
    taken = []
    for module, name in ((small_t, "small_t_moe"), (grouped, "grouped_moe")):
        run = getattr(module, name)  # spied on, still run
        monkeypatch.setattr(module, name, lambda *a, _run=run, _n=name: taken.append(_n) or _run(*a))
    x, w13, w2, weights, ids = make_inputs(T, 32, inter, 16, topk, FP16)
    scales = {}
    if fp8_weights:
        (w13, s13), (w2, s2) = fp8.quantize_channel(w13), fp8.quantize_channel(w2)
        scales = {"w13_scale": s13, "w2_scale": s2}
    out = run_kernel(x, w13, w2, weights, ids, **scales)
    assert taken == (["grouped_moe"] if pairs_over_bound else ["small_t_moe"])
    torch.testing.assert_close(out.float(),
                               fused_moe_ref(x, w13, w2, weights, ids, **scales).float(),
                               **TOL[FP16])


# (E_global, ep_size, ep_rank, T, topk, dtype)
EP_CASES = [
    (16, 4, 1, 11, 4, FP32),
    (16, 4, 3, 1, 4, FP16),
    (512, 8, 7, 4, 10, FP16),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("E, ep_size, ep_rank, T, topk, dtype", EP_CASES)
def test_expert_parallel_shard(E, ep_size, ep_rank, T, topk, dtype, path):
    x, w13, w2, weights, ids = make_inputs(T, 32, 16, E, topk, dtype)
    emap = ep_expert_map(E, ep_rank, ep_size, device=DEVICE)
    local = slice(ep_rank * E // ep_size, (ep_rank + 1) * E // ep_size)
    out = run_kernel(x, w13[local], w2[local], weights, ids, expert_map=emap,
                     small_t=PATHS[path])
    ref = fused_moe_ref(x, w13[local], w2[local], weights, ids, expert_map=emap)
    torch.testing.assert_close(out.float(), ref.float(), **TOL[dtype])


@pytest.mark.parametrize("path", PATHS)
def test_expert_parallel_ranks_sum_to_full(path):
    E, ep_size = 16, 4
    x, w13, w2, weights, ids = make_inputs(9, 32, 16, E, 4, FP32)
    total = torch.zeros_like(x)
    for rank in range(ep_size):
        emap = ep_expert_map(E, rank, ep_size, device=DEVICE)
        local = slice(rank * E // ep_size, (rank + 1) * E // ep_size)
        total += run_kernel(x, w13[local], w2[local], weights, ids, expert_map=emap,
                            small_t=PATHS[path])
    torch.testing.assert_close(total, fused_moe_ref(x, w13, w2, weights, ids), **TOL[FP32])


@pytest.mark.parametrize("path", PATHS)
def test_tensor_parallel_shards_sum_to_full(path):
    T, H, I, E, topk, tp = 5, 32, 32, 8, 2, 2
    x, w13, w2, weights, ids = make_inputs(T, H, I, E, topk, FP32)
    gate, up = w13.split(I, dim=1)  # [E, I, H] each
    total = torch.zeros_like(x)
    for rank in range(tp):
        shard = slice(rank * I // tp, (rank + 1) * I // tp)
        w13_shard = torch.cat([gate[:, shard], up[:, shard]], dim=1)  # [E, 2I/tp, H]
        total += run_kernel(x, w13_shard, w2[:, :, shard], weights, ids,  # strided w2 view
                            small_t=PATHS[path])
    torch.testing.assert_close(total, fused_moe_ref(x, w13, w2, weights, ids), **TOL[FP32])


# (T, E, topk, block_m, ep_size, routing): ep_size > 1 uses rank 0's expert map.
ALIGN_CASES = [
    (1, 8, 2, 16, 1, "random"),
    (37, 8, 2, 16, 1, "random"),
    (5, 512, 10, 16, 1, "random"),
    (9, 16, 4, 32, 4, "random"),
    (40, 16, 2, 16, 1, "one_expert"),
    (21, 64, 4, 16, 1, "few_experts"),
    (30, 64, 4, 16, 8, "random"),
]
# chunk: 0 = the one-program align; 16 = the parallel align, several chunks even at small T.
CHUNKS = {"one program": 0, "parallel": 16}


def align_inputs(T, E, topk, ep_size, routing):
    _, _, _, _, ids = make_inputs(T, 16, 16, E, topk, FP32, routing)
    emap = ep_expert_map(E, 0, ep_size, device=DEVICE) if ep_size > 1 else None
    return ids, emap, E // ep_size


def segments(blocks, block_m, P):
    """{expert: sorted pair ids} read from the blocks."""
    rows = blocks.sorted_pairs.view(-1, block_m).cpu()  # [num_blocks, BLOCK_M]
    seg = {}
    for b, e in enumerate(blocks.block_expert.tolist()):
        seg.setdefault(e, []).extend(p for p in rows[b].tolist() if p != P)
    return {e: sorted(p) for e, p in seg.items()}


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("T, E, topk, block_m, ep_size, routing", ALIGN_CASES)
def test_align_groups_every_local_pair_once(T, E, topk, block_m, ep_size, routing, chunk):
    ids, emap, local_e = align_inputs(T, E, topk, ep_size, routing)
    blocks = align.align_experts(ids, local_e, block_m, emap, chunk=CHUNKS[chunk])
    P = T * topk
    expected = ids.reshape(-1).long()  # [P]
    expected = torch.where(expected < local_e, expected, -1)
    assert blocks.pair_expert.tolist() == expected.tolist()
    rows = blocks.sorted_pairs.view(-1, block_m).cpu()  # [num_blocks, BLOCK_M]
    seen = []
    for b, e in enumerate(blocks.block_expert.tolist()):
        pairs = [p for p in rows[b].tolist() if p != P]
        assert e >= 0 or not pairs, f"block {b} past the end holds pairs {pairs}"
        assert all(expected[p] == e for p in pairs), f"block {b} (expert {e}) holds {pairs}"
        seen += pairs
    assert sorted(seen) == [p for p in range(P) if expected[p] >= 0]


@pytest.mark.parametrize("T, E, topk, block_m, ep_size, routing", ALIGN_CASES)
def test_parallel_align_equals_one_program(T, E, topk, block_m, ep_size, routing):
    # Same blocks and owners; inside an expert's segment the pair order may differ.
    ids, emap, local_e = align_inputs(T, E, topk, ep_size, routing)
    one = align.align_experts(ids, local_e, block_m, emap, chunk=None)
    par = align.align_experts(ids, local_e, block_m, emap, chunk=CHUNKS["parallel"])
    assert par.block_expert.tolist() == one.block_expert.tolist()
    assert par.pair_expert.tolist() == one.pair_expert.tolist()
    P = T * topk
    assert segments(par, block_m, P) == segments(one, block_m, P)


# T just below / above PARALLEL_MIN_PAIRS pairs at top-10; chunk None is what grouped.py passes.
ALIGN_T = (align.PARALLEL_MIN_PAIRS // 10, align.PARALLEL_MIN_PAIRS // 10 + 1)


@pytest.mark.parametrize("T, chunk, parallel", [(ALIGN_T[0], None, False),
                                                (ALIGN_T[1], None, True), (ALIGN_T[1], 0, False)])
def test_align_dispatch(monkeypatch, T, chunk, parallel):
    ran_one = []
    one_program = align._align_one_program
    monkeypatch.setattr(align, "_align_one_program", lambda *a: ran_one.append(1) or one_program(*a))
    ids, _, _ = align_inputs(T, 16, 10, 1, "random")
    blocks = align.align_experts(ids, 16, 16, chunk=chunk)
    assert bool(ran_one) != parallel
    pairs = [p for seg in segments(blocks, 16, T * 10).values() for p in seg]
    assert sorted(pairs) == list(range(T * 10))


def test_grouped_path_runs_the_parallel_align_above_the_bound(monkeypatch):
    monkeypatch.setattr(align, "_align_one_program", None)  # calling it fails the test
    x, w13, w2, weights, ids = make_inputs(ALIGN_T[1], 16, 16, 16, 10, FP32)
    out = run_kernel(x, w13, w2, weights, ids, small_t=False)
    torch.testing.assert_close(out, fused_moe_ref(x, w13, w2, weights, ids), **TOL[FP32])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("T", [1, 64, 300])
def test_bf16_on_gpu(T, path):
    x, w13, w2, weights, ids = make_inputs(T, 256, 128, 512, 10, BF16)
    out = run_kernel(x, w13, w2, weights, ids, small_t=PATHS[path])
    ref = fused_moe_ref(x, w13, w2, weights, ids)
    torch.testing.assert_close(out.float(), ref.float(), **TOL[BF16])

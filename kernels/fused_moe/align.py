"""Token-to-expert sort and align: groups the T*topk (token, slot) pairs by local expert.

Called by the grouped path (grouped.py) before its two GEMMs; no host sync. Small T: one
program. Large T (prefill): a parallel align over chunks of pairs (three launches).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .. import buffers


class ExpertBlocks(NamedTuple):
    """Pairs (p = t * topk + k) grouped by expert, each group padded to a BLOCK_M multiple.

    sorted_pairs: [num_blocks * BLOCK_M] int32, pair ids of block b in rows
        [b * BLOCK_M, (b + 1) * BLOCK_M); padding rows hold P = T * topk.
    block_expert: [num_blocks] int32, local expert of each block; -1 for blocks past the end.
    pair_expert: [P] int32, local expert of each pair; -1 where it is not local (skipped).
    """

    sorted_pairs: torch.Tensor
    block_expert: torch.Tensor
    pair_expert: torch.Tensor


PARALLEL_MIN_PAIRS = 1024  # above this many pairs the parallel align runs
PARALLEL_CHUNK = 2048  # pairs per program of the parallel align


def max_blocks(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Static bound on the block count: each non-empty expert pads by at most BLOCK_M - 1 rows."""
    rows = num_pairs + min(num_experts, num_pairs) * (block_m - 1)
    return triton.cdiv(rows, block_m)


@triton.jit
def _local_expert(topk_ids_ptr, expert_map_ptr, offs, P, E, E_GLOBAL, HAS_MAP: tl.constexpr):
    """Pairs offs -> (local expert id, -1 for a pair of no local expert; is it local?)."""
    in_range = offs < P
    e = tl.load(topk_ids_ptr + offs, mask=in_range, other=-1).to(tl.int32)
    if HAS_MAP:
        mapped = in_range & (e >= 0) & (e < E_GLOBAL)
        e = tl.load(expert_map_ptr + e, mask=mapped, other=-1).to(tl.int32)
    valid = in_range & (e >= 0) & (e < E)
    return tl.where(valid, e, -1), valid


@triton.jit
def _align_kernel(
    topk_ids_ptr,
    expert_map_ptr,
    pair_expert_ptr,
    cursor_ptr,
    sorted_pairs_ptr,
    block_expert_ptr,
    P,
    E,
    E_GLOBAL,
    NUM_BLOCKS,
    HAS_MAP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    # 1. Local expert of every pair, and the per-expert histogram (kept in registers).
    counts = tl.zeros([BLOCK_E], dtype=tl.int32)
    for p0 in range(0, P, BLOCK_P):
        offs = p0 + tl.arange(0, BLOCK_P)
        e, valid = _local_expert(topk_ids_ptr, expert_map_ptr, offs, P, E, E_GLOBAL, HAS_MAP)
        tl.store(pair_expert_ptr + offs, e, mask=offs < P)
        counts += tl.histogram(tl.where(valid, e, 0), BLOCK_E, mask=valid)

    # 2. Padded segment of each expert; block b belongs to the expert whose segment holds row b*BM.
    padded = tl.cdiv(counts, BLOCK_M) * BLOCK_M
    ends = tl.cumsum(padded, 0)
    starts = ends - padded
    total = tl.sum(padded, 0)
    e_offs = tl.arange(0, BLOCK_E)
    tl.store(cursor_ptr + e_offs, starts, mask=e_offs < E)
    for b0 in range(0, NUM_BLOCKS, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B)
        row = b * BLOCK_M
        owner = tl.sum((ends[None, :] <= row[:, None]).to(tl.int32), 1)
        owner = tl.where(row < total, owner, -1)
        tl.store(block_expert_ptr + b, owner, mask=b < NUM_BLOCKS)
        rows = row[:, None] + tl.arange(0, BLOCK_M)[None, :]
        pad = tl.full([BLOCK_B, BLOCK_M], 0, tl.int32) + P
        tl.store(sorted_pairs_ptr + rows, pad, mask=(b < NUM_BLOCKS)[:, None])
    # The scatter below overwrites padding and reads pair_expert/cursor written by other threads.
    tl.debug_barrier()

    # 3. Scatter pair ids into their expert's segment; order inside a segment does not matter.
    for p0 in range(0, P, BLOCK_P):
        offs = p0 + tl.arange(0, BLOCK_P)
        e = tl.load(pair_expert_ptr + offs, mask=offs < P, other=-1)
        valid = e >= 0
        pos = tl.atomic_add(cursor_ptr + e, 1, mask=valid)
        tl.store(sorted_pairs_ptr + pos, offs, mask=valid)


@triton.jit
def _chunk_count_kernel(
    topk_ids_ptr, expert_map_ptr, pair_expert_ptr, chunk_counts_ptr,
    sorted_pairs_ptr, block_expert_ptr,
    P, E, E_GLOBAL, NUM_ROWS, NUM_BLOCKS, FILL_ROWS, FILL_BLOCKS,
    HAS_MAP: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr,
):
    # Chunk c: local expert of its pairs, its histogram, and its share of the padding fill.
    c = tl.program_id(0)
    offs = c * BLOCK_P + tl.arange(0, BLOCK_P)
    e, valid = _local_expert(topk_ids_ptr, expert_map_ptr, offs, P, E, E_GLOBAL, HAS_MAP)
    tl.store(pair_expert_ptr + offs, e, mask=offs < P)
    counts = tl.histogram(tl.where(valid, e, 0), BLOCK_E, mask=valid)
    tl.store(chunk_counts_ptr + c * BLOCK_E + tl.arange(0, BLOCK_E), counts)
    for r0 in range(c * FILL_ROWS, (c + 1) * FILL_ROWS, BLOCK_P):
        rows = r0 + tl.arange(0, BLOCK_P)
        tl.store(sorted_pairs_ptr + rows, tl.full([BLOCK_P], 0, tl.int32) + P,
                 mask=(rows < NUM_ROWS) & (rows < (c + 1) * FILL_ROWS))
    for b0 in range(c * FILL_BLOCKS, (c + 1) * FILL_BLOCKS, BLOCK_P):
        b = b0 + tl.arange(0, BLOCK_P)
        tl.store(block_expert_ptr + b, tl.full([BLOCK_P], -1, tl.int32),
                 mask=(b < NUM_BLOCKS) & (b < (c + 1) * FILL_BLOCKS))


@triton.jit
def _chunk_offsets_kernel(chunk_counts_ptr, seg_end_ptr, NUM_CHUNKS,
                          BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr):
    # Padded segment of each expert; chunk c's pairs of expert e go after those of chunks < c.
    e_offs = tl.arange(0, BLOCK_E)
    counts = tl.zeros([BLOCK_E], dtype=tl.int32)
    for c in range(NUM_CHUNKS):
        counts += tl.load(chunk_counts_ptr + c * BLOCK_E + e_offs)
    padded = tl.cdiv(counts, BLOCK_M) * BLOCK_M
    ends = tl.cumsum(padded, 0)
    tl.store(seg_end_ptr + e_offs, ends)
    cursor = ends - padded
    for c in range(NUM_CHUNKS):
        n = tl.load(chunk_counts_ptr + c * BLOCK_E + e_offs)
        tl.store(chunk_counts_ptr + c * BLOCK_E + e_offs, cursor)
        cursor += n


@triton.jit
def _chunk_scatter_kernel(
    pair_expert_ptr, chunk_cursor_ptr, seg_end_ptr, sorted_pairs_ptr, block_expert_ptr,
    P, NUM_CHUNKS, NUM_BLOCKS,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_B: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < NUM_CHUNKS:
        # Pair ids of chunk pid into their expert's segment (order inside it does not matter).
        offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
        e = tl.load(pair_expert_ptr + offs, mask=offs < P, other=-1)
        valid = e >= 0
        pos = tl.atomic_add(chunk_cursor_ptr + pid * BLOCK_E + e, 1, mask=valid)
        tl.store(sorted_pairs_ptr + pos, offs, mask=valid)
    else:
        # Owner of each block: the expert whose segment holds row b * BLOCK_M.
        b = (pid - NUM_CHUNKS) * BLOCK_B + tl.arange(0, BLOCK_B)
        row = b * BLOCK_M
        ends = tl.load(seg_end_ptr + tl.arange(0, BLOCK_E))
        owner = tl.sum((ends[None, :] <= row[:, None]).to(tl.int32), 1)
        tl.store(block_expert_ptr + b, owner, mask=(b < NUM_BLOCKS) & (row < tl.max(ends, 0)))


def default_chunk(num_pairs: int) -> int:
    """The align for num_pairs pairs when the caller names none (the grouped path): the parallel
    one, PARALLEL_CHUNK pairs per program, above PARALLEL_MIN_PAIRS pairs; else 0, one program."""
    return PARALLEL_CHUNK if num_pairs > PARALLEL_MIN_PAIRS else 0


def align_experts(
    topk_ids: torch.Tensor,
    num_experts: int,
    block_m: int,
    expert_map: torch.Tensor | None = None,
    chunk: int | None = None,
) -> ExpertBlocks:
    """topk_ids: [T, topk] int global ids; num_experts: local expert count (rows of w13).

    expert_map: optional [E_global] int, global -> local id or -1. Pairs whose expert is not
    local (or whose id is negative) are left out of every block.
    chunk: pairs per program of the parallel align (three launches: count per chunk, offsets,
    scatter); 0: the one-program align (one launch, cheapest while T * topk is small); None
    (what the grouped path passes): default_chunk(T * topk).
    """
    if chunk is None:
        chunk = default_chunk(topk_ids.numel())
    if not chunk:
        return _align_one_program(topk_ids, num_experts, block_m, expert_map)
    device = topk_ids.device
    ids = topk_ids.reshape(-1)  # [P]
    num_pairs = ids.numel()
    num_blocks = max_blocks(num_pairs, num_experts, block_m)
    num_chunks = triton.cdiv(num_pairs, chunk)
    block_e = max(16, triton.next_power_of_2(num_experts))
    pair_expert = buffers.empty((num_pairs,), torch.int32, device)
    chunk_counts = buffers.empty((num_chunks, block_e), torch.int32, device)
    seg_end = buffers.empty((block_e,), torch.int32, device)
    sorted_pairs = buffers.empty((num_blocks * block_m,), torch.int32, device)
    block_expert = buffers.empty((num_blocks,), torch.int32, device)
    emap = expert_map if expert_map is not None else ids  # placeholder pointer when unused
    _chunk_count_kernel[(num_chunks,)](
        ids, emap, pair_expert, chunk_counts, sorted_pairs, block_expert,
        num_pairs, num_experts, emap.numel(), num_blocks * block_m, num_blocks,
        triton.cdiv(num_blocks * block_m, num_chunks), triton.cdiv(num_blocks, num_chunks),
        HAS_MAP=expert_map is not None, BLOCK_P=chunk, BLOCK_E=block_e, num_warps=8,
    )
    _chunk_offsets_kernel[(1,)](chunk_counts, seg_end, num_chunks,
                                BLOCK_M=block_m, BLOCK_E=block_e, num_warps=8)
    block_b = max(16, min(256, 8192 // block_e))
    _chunk_scatter_kernel[(num_chunks + triton.cdiv(num_blocks, block_b),)](
        pair_expert, chunk_counts, seg_end, sorted_pairs, block_expert,
        num_pairs, num_chunks, num_blocks,
        BLOCK_M=block_m, BLOCK_P=chunk, BLOCK_E=block_e, BLOCK_B=block_b, num_warps=8,
    )
    return ExpertBlocks(sorted_pairs, block_expert, pair_expert)


def _align_one_program(topk_ids, num_experts, block_m, expert_map) -> ExpertBlocks:
    device = topk_ids.device
    ids = topk_ids.reshape(-1)  # [P]
    num_pairs = ids.numel()
    num_blocks = max_blocks(num_pairs, num_experts, block_m)
    pair_expert = buffers.empty((num_pairs,), torch.int32, device)
    cursor = buffers.empty((num_experts,), torch.int32, device)
    sorted_pairs = buffers.empty((num_blocks * block_m,), torch.int32, device)
    block_expert = buffers.empty((num_blocks,), torch.int32, device)
    emap = expert_map if expert_map is not None else ids  # placeholder pointer when unused
    block_e = max(16, triton.next_power_of_2(num_experts))
    _align_kernel[(1,)](
        ids,
        emap,
        pair_expert,
        cursor,
        sorted_pairs,
        block_expert,
        num_pairs,
        num_experts,
        emap.numel(),
        num_blocks,
        HAS_MAP=expert_map is not None,
        BLOCK_M=block_m,
        BLOCK_P=1024,
        BLOCK_E=block_e,
        BLOCK_B=max(16, min(256, 8192 // block_e)),
        num_warps=8,
    )
    return ExpertBlocks(sorted_pairs, block_expert, pair_expert)

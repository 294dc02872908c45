"""Token-to-expert sort and align: groups the T*topk (token, slot) pairs by local expert.

Called by `kernel.fused_moe` before its two grouped GEMMs; one Triton program, no host sync.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl


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


def workspace(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every scratch buffer of fused_moe comes from here, so tests can poison them all."""
    return torch.empty(shape, dtype=dtype, device=device)


def max_blocks(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Static bound on the block count: each non-empty expert pads by at most BLOCK_M - 1 rows."""
    rows = num_pairs + min(num_experts, num_pairs) * (block_m - 1)
    return triton.cdiv(rows, block_m)


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
        in_range = offs < P
        e = tl.load(topk_ids_ptr + offs, mask=in_range, other=-1).to(tl.int32)
        if HAS_MAP:
            mapped = in_range & (e >= 0) & (e < E_GLOBAL)
            e = tl.load(expert_map_ptr + e, mask=mapped, other=-1).to(tl.int32)
        valid = in_range & (e >= 0) & (e < E)
        e = tl.where(valid, e, -1)
        tl.store(pair_expert_ptr + offs, e, mask=in_range)
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


def align_experts(
    topk_ids: torch.Tensor,
    num_experts: int,
    block_m: int,
    expert_map: torch.Tensor | None = None,
) -> ExpertBlocks:
    """topk_ids: [T, topk] int global ids; num_experts: local expert count (rows of w13).

    expert_map: optional [E_global] int, global -> local id or -1. Pairs whose expert is not
    local (or whose id is negative) are left out of every block.
    """
    device = topk_ids.device
    ids = topk_ids.reshape(-1)  # [P]
    num_pairs = ids.numel()
    num_blocks = max_blocks(num_pairs, num_experts, block_m)
    pair_expert = workspace((num_pairs,), torch.int32, device)
    cursor = workspace((num_experts,), torch.int32, device)
    sorted_pairs = workspace((num_blocks * block_m,), torch.int32, device)
    block_expert = workspace((num_blocks,), torch.int32, device)
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

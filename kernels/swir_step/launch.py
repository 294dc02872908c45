"""Host side of the fused SwiReasoning step: buffers, grids and the three launches (kernel.py,
update.py): `row_stats` and the mixture in `pre_sample`, the update in `post_sample`.

`pre_sample` runs where SGLang hands over the raw logits (before grammar masks and temperature
touch them), `post_sample` once the batch's tokens are sampled. Neither synchronises with the
device: every decision is taken by the kernels. Under tensor parallelism the caller sums the
partial mixtures of `pre_sample` over the TP group between the two (see `reduce_partials`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .. import buffers, interpreted
from . import kernel as K
from . import update as U
from .layout import STAT_FIELDS

_ROUND = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


@dataclass
class StepTables:
    """Per-slot device state and what the step publishes (S slots, H hidden, V vocab)."""

    ints: torch.Tensor  # [S, NI] int32 (layout.INT_FIELDS)
    floats: torch.Tensor  # [S, NF] fp32 (layout.FLOAT_FIELDS)
    queue: torch.Tensor  # [S, Q] int32: injected tokens
    convergence: torch.Tensor  # [Q] int32, padded
    termination: torch.Tensor  # [Q] int32, padded
    convergence_len: int
    termination_len: int
    math_mask: torch.Tensor  # [V] int8
    special: torch.Tensor  # [3, H] model dtype: newline, <think>, </think> rows
    pending: torch.Tensor  # [S, H] model dtype: the slot's next input, where `use`
    use: torch.Tensor  # [S] int8: the next decode step embeds `pending`, not the token
    history: torch.Tensor  # [S, HIST] int8: 1 latent, 0 explicit, -1 not reached
    stats: torch.Tensor  # [S, len(STAT_FIELDS)] int32: the response statistics
    eos_id: int  # -1: none
    think_end_id: int
    tickets: torch.Tensor  # [S + ticket_count(S, H)] int32 zeros: last-program counters


@dataclass(frozen=True)
class PreSample:
    """What `post_sample` needs from before sampling (device tensors, R stepping rows)."""

    rows: torch.Tensor  # [R] int64: row in the batch
    slots: torch.Tensor  # [R] int64
    m: torch.Tensor  # [R, NC] fp32 per-chunk max of the rounded logits
    s: torch.Tensor  # [R, NC] fp32 sum e^(z - m)
    t: torch.Tensor  # [R, NC] fp32 sum e^(z - m) (z - m)
    row: torch.Tensor  # [R, 2] fp32 (log-sum-exp, entropy)
    need: torch.Tensor  # [R] int32: the row's next input may be soft (its mixture is computed)
    partials: torch.Tensor  # [1, R, H] fp32 mixtures (row blocks that need none: unwritten)
    sparse: torch.Tensor | None  # [R, H] fp32 top-k mixtures (soft_topk rows), or None


# The mixture reads a copy of the shard's logits in the table's dtype, which the stats pass
# writes, instead of the fp32 logits: the same rounded values (the same bits out), half the
# bytes re-read for every hidden block at 16-bit tables. Off until a GPU run shows it faster:
# bench_swir_step.py times latent rows at TP 8 both ways.
COPY_LOGITS = False
# Programmatic dependent launch (Hopper) of the mixture after the stats pass: the mixture's
# launch overlaps the stats pass, which saves part of a kernel boundary on every step. Off
# until a GPU run times it (bench_swir_step, TP 8); never under the interpreter.
PDL = False


def pdl() -> bool:
    """Whether the mixture is a dependent launch of the stats pass (PDL on, compiled)."""
    return PDL and not interpreted()


def ticket_count(slots: int, H: int) -> int:
    """Counters the mixture's tiles need at most (row blocks of 16 x hidden blocks of 16)."""
    return triton.cdiv(slots, 16) * triton.cdiv(H, 16)


@dataclass(frozen=True)
class StatsTiles:
    """The stats pass: vocab entries per program, per load, and warps."""

    chunk: int
    block: int
    num_warps: int


# Row-count bucket -> stats tiles (bench_swir_step.py --sweep times candidates): one
# 2048-wide load per program with 4 warps was fastest for every row count on an H200 with the
# one-exp pass (2026-11-27, bench/RESULTS.md); the H100's choice for that pass is owed.
STATS_TILES = {16: StatsTiles(K.CHUNK, 2048, 4), 64: StatsTiles(K.CHUNK, 2048, 4)}


def row_stats(logits: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, tables: StepTables,
              vocab: int, dtype: torch.dtype, tiles: StatsTiles | None = None,
              copy: torch.Tensor | None = None, v_start: int = 0):
    """logits: [B, V'] (V' >= vocab) -> (m, s, t) [R, NC] fp32 over rows[R] of the batch, and
    per row (lse, entropy) [R, 2] and `need` [R]. copy: [R, v_len] `dtype`, where given: also
    the rounded logits of vocab ids [v_start, v_start + v_len), for the rows of latent and
    switch requests (the others' rows left unwritten).
    Bytes: R * vocab * sizeof(logits) read (+ R * v_len * sizeof(dtype) written).
    FLOPs: ~8 R * vocab (+ R * vocab exp)."""
    assert logits.stride(1) == 1
    R = rows.numel()
    assert R <= tables.ints.shape[0], "more stepping rows than slots"
    if tiles is None:
        tiles = StatsTiles(K.CHUNK, K.BLOCK, 4) if interpreted() else STATS_TILES[
            16 if R <= 16 else 64]
    chunk = min(tiles.chunk, triton.cdiv(vocab, tiles.block) * tiles.block)
    nc = triton.cdiv(vocab, chunk)
    m, s, t = (buffers.empty((R, nc), torch.float32, logits.device) for _ in range(3))
    row = buffers.empty((R, 2), torch.float32, logits.device)
    need = buffers.empty((R,), torch.int32, logits.device)
    if R:
        K._stats_kernel[(R, nc)](
            logits, rows, slots, tables.ints, tables.floats, m, s, t, row, need, tables.tickets,
            m if copy is None else copy, vocab, logits.stride(0), nc, tables.ints.stride(0),
            tables.floats.stride(0), v_start, 0 if copy is None else copy.shape[1],
            NCP=triton.next_power_of_2(nc), CHUNK=chunk, BLOCK=tiles.block,
            ROUND_TYPE=_ROUND[dtype], COPY=copy is not None, PDL=pdl(),
            num_warps=tiles.num_warps)
    return m, s, t, row, need


def mix_grid(R: int, H: int, v_len: int, block_h: int = K.MIX_BLOCK_H,
             block_v: int = K.MIX_BLOCK_V, target: int = K.TARGET_PROGRAMS,
             block_r_max: int = K.BLOCK_R_MAX) -> tuple[int, int, int, int, int]:
    """(row block, H blocks, V splits, rows per split, row blocks) for R rows of a v_len shard."""
    block_r = min(block_r_max, max(16, triton.next_power_of_2(max(R, 1))))
    n_rb = triton.cdiv(max(R, 1), block_r)
    n_hb = triton.cdiv(H, block_h)
    splits = max(1, min(triton.cdiv(v_len, block_v), target // (n_hb * n_rb)))
    split_len = triton.cdiv(triton.cdiv(v_len, splits), block_v) * block_v
    return block_r, n_hb, triton.cdiv(v_len, split_len), split_len, n_rb


@dataclass(frozen=True)
class MixTiles:
    """Mixture kernel tiles: hidden and vocab block, warps, pipeline stages, target programs,
    and the most rows per row block (16-64). Row blocks of the same (hidden block, split) are
    neighbours in launch order, so several of them stream the same table tile at once (the
    second read comes from L2)."""

    block_h: int
    block_v: int
    num_warps: int
    num_stages: int
    target: int = K.TARGET_PROGRAMS
    block_r: int = K.BLOCK_R_MAX


# Row-count bucket -> tiles: the fastest of bench_swir_step.py --sweep's candidates.
# <= 16 rows: the H200's choice (2026-11-27, bench/RESULTS_GPU_EARLIER.md), confirmed by a second
# H200 sweep with the ticketed kernels; the H100 preferred target 264 by 3 µs. 32-64 rows: the
# second H200 sweep's choice (bench/RESULTS.md), 13-14% faster there than the old default, which
# the H100 also beat with target 264.
GPU_TILES = {
    16: MixTiles(block_h=128, block_v=64, num_warps=4, num_stages=3),
    64: MixTiles(block_h=128, block_v=32, num_warps=4, num_stages=3, target=264),
}


def gpu_tiles(R: int) -> MixTiles:
    """Few rows: narrow tiles, many programs. Many rows: wide H blocks, so that each logits
    tile (and its exp) is recomputed for fewer H blocks."""
    return GPU_TILES[16] if R <= 16 else GPU_TILES[64]


def pre_sample(logits: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor,
               tables: StepTables, table: torch.Tensor, v_start: int, v_len: int, vocab: int,
               sparse: torch.Tensor | None = None, *, tiles: MixTiles | None = None) -> PreSample:
    """logits: [B, V'] raw (fp32); rows / slots: [R] int64; table: [>= v_len, H] this rank's
    rows of the embedding for vocab ids [v_start, v_start + v_len). Launches 2 kernels.

    Bytes: stats R * V * 4 read; mixture (only if some row may go soft) v_len * H * b of table
    + R * v_len * 4 of logits (L2-resident across H blocks) + NS * R * H * 4 written and read
    back by each tile's last split + R * H * 4 written. COPY_LOGITS: the stats pass also writes
    R * v_len * b, and the mixture reads that copy (b bytes a logit) instead of the logits.
    FLOPs: 2 * R_pad * v_len * H (x2 with bf16 tables: p is split into two bf16 halves)."""
    dtype = table.dtype
    R, H = rows.numel(), table.shape[1]
    dependent = pdl()
    copy = buffers.empty((R, v_len), dtype, logits.device) if COPY_LOGITS else None
    m, s, t, row, need = row_stats(logits, rows, slots, tables, vocab, dtype, copy=copy,
                                   v_start=v_start)
    if tiles is None and not interpreted():
        tiles = gpu_tiles(R)
    elif tiles is None:  # the interpreter runs programs one after another: one does all
        tiles = MixTiles(triton.next_power_of_2(H), min(256, triton.next_power_of_2(v_len)),
                         4, 1, target=1)
    block_h, block_v = tiles.block_h, tiles.block_v
    block_r, n_hb, ns, split_len, n_rb = mix_grid(R, H, v_len, block_h, block_v, tiles.target,
                                                  tiles.block_r)
    assert block_r >= 16 and block_h >= 16 and n_rb * n_hb <= tables.tickets.numel() - \
        tables.ints.shape[0], "the mixture tiles need more tickets than the tables hold"
    # [NS, R, H] split partials and the [R, H] mixture, left unwritten for row blocks that need
    # none (poisoned in the tests)
    partials = buffers.empty((ns, R, H), torch.float32, logits.device)
    mix = buffers.empty((1, R, H), torch.float32, logits.device)
    if R:
        K._mix_kernel[(n_rb, n_hb, ns)](
            logits, rows, row, need, table, partials, mix,
            tables.tickets[tables.ints.shape[0]:], row if copy is None else copy, R,
            logits.stride(0), table.stride(0), v_start, v_len, H, split_len,
            ROUND_TYPE=_ROUND[dtype], BF16X2=dtype == torch.bfloat16 and not interpreted(),
            COPY=copy is not None, PDL=dependent, launch_pdl=dependent,
            BLOCK_R=block_r, BLOCK_V=block_v, BLOCK_H=block_h,
            num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return PreSample(rows, slots, m, s, t, row, need, mix, sparse)


def reduce_partials(pre: PreSample, all_reduce) -> PreSample:
    """Tensor parallelism: every rank mixed its vocab shard; sum the ranks (one all-reduce of
    [R, H] fp32, plus [R, H] for top-k rows)."""
    parts = [pre.partials]
    if pre.sparse is not None:
        parts.append(pre.sparse[None])
    total = all_reduce(torch.cat(parts))
    sparse = total[1] if pre.sparse is not None else None
    return PreSample(pre.rows, pre.slots, pre.m, pre.s, pre.t, pre.row, pre.need, total[:1],
                     sparse)


def post_sample(pre: PreSample, tokens: torch.Tensor, tables: StepTables) -> torch.Tensor:
    """tokens: [B] the batch's sampled tokens, rewritten in place for the stepping rows (an
    injection or EOS replaces the sample). Steps each row's state, publishes its next input.
    Returns row_out [R, 2] int32: (history column written or -1, latent?). One launch.
    Bytes: ~200 B of state per row + (rows going soft) H * 4 + H * b."""
    R = pre.rows.numel()
    row_out = buffers.empty((R, 2), torch.int32, tokens.device)
    if R == 0:
        return row_out
    t = tables
    H = t.pending.shape[1]
    assert t.stats.shape[1] == 6 and STAT_FIELDS == (  # the order update.py stores them in
        "latent_steps", "explicit_steps", "switches", "injected_convergence",
        "injected_termination", "forced_think_end")
    Q = t.queue.shape[1]
    sparse = pre.sparse if pre.sparse is not None else pre.partials
    block_r = triton.next_power_of_2(R) if interpreted() else 1  # interpreter: one program
    U._update_kernel[(triton.cdiv(R, block_r),)](
        pre.rows, pre.slots, tokens, pre.row, t.ints, t.floats, t.queue,
        t.convergence, t.termination, t.math_mask, pre.partials, sparse, t.special, t.pending,
        t.use, t.history, t.stats, row_out,
        R, t.ints.stride(0), t.floats.stride(0), Q, t.convergence_len,
        t.termination_len, t.math_mask.numel(), t.eos_id, t.think_end_id, H, t.history.shape[1],
        BLOCK_R=block_r, BLOCK_Q=triton.next_power_of_2(Q),
        BLOCK_H=min(1024, triton.next_power_of_2(H)), HAS_SPARSE=pre.sparse is not None)
    return row_out

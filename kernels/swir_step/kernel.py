"""The fused SwiReasoning step: three Triton launches over the stepping rows of a batch.

Called by `rio_sglang.runtime.sampler` around SGLang's sampler; its plain-torch twin is the
single-request `rio_sglang.reasoning.reference.swir_step` (test_swir_step.py compares them).
1. `row_stats` (before sampling): split-V pass over the raw logits -> per (row, chunk) max,
   sum e^(z-max), sum e^(z-max)(z-max); no [B, V] probability tensor. The last program of a
   row (an atomic ticket) combines the row's chunks once: its log-sum-exp, entropy, and
   whether its next input may be soft (`need`).
2. `mix` (before sampling, the logits are still raw): p = exp(z - lse) times this rank's vocab
   shard of the embedding, fp32, for rows that `need` it; a program whose rows need none exits
   after reading their flags. With `launch.COPY_LOGITS`, z comes from a copy of the shard's
   logits in the table's dtype that pass 1 writes for latent / switch rows (the values the
   mixture rounds them to anyway: the same bits, half the bytes re-read per hidden block).
   With `launch.PDL` (Hopper), the mixture is a programmatic dependent launch of pass 1: it is
   set up while pass 1 runs and waits (griddepcontrol) before it reads pass 1's results.
   The last V split of each tile (a ticket again) sums the splits in order (deterministic)
   into one [R, H] mixture.
3. `update` (after sampling; update.py): the state machine per row, the emitted token, and the
   next input (mixture + delimiter blend, one rounding) published into the slot's buffer.
This file holds 1 and 2, the tiles, the state-table columns as compile-time constants and
`_lse_entropy`; `launch.py` launches.
Tickets: int32 counters that start at 0 and that the last program resets to 0; the stores a
program makes before its ticket are fenced by a barrier and the atomic's release, and the last
program reads them back through L2 (`.cg`), never a stale L1 line.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .layout import FLOAT_COL, INT_COL

CHUNK = 2048  # vocab entries per stats program: short serial loops, many programs per row
BLOCK = 1024
# Mixture tiles: rows, vocab, hidden.
BLOCK_R_MAX = 64
MIX_BLOCK_V = 64
MIX_BLOCK_H = 64
TARGET_PROGRAMS = 528  # ~4 per SM on an H100 (132 SMs): enough bytes in flight

# Columns of the state tables (layout.py), as compile-time constants.
C_KIND = tl.constexpr(INT_COL["kind"])
C_EXPLICIT = tl.constexpr(INT_COL["explicit"])
C_STAY = tl.constexpr(INT_COL["stay"])
C_SWITCHES = tl.constexpr(INT_COL["switches"])
C_LOCKED = tl.constexpr(INT_COL["locked"])
C_CLOSED = tl.constexpr(INT_COL["closed"])
C_STEP = tl.constexpr(INT_COL["step"])
C_QPOS = tl.constexpr(INT_COL["queue_pos"])
C_QLEN = tl.constexpr(INT_COL["queue_len"])
C_QLOCKS = tl.constexpr(INT_COL["queue_locks"])
C_BUDGET = tl.constexpr(INT_COL["answer_budget"])
C_COLD = tl.constexpr(INT_COL["cold_count"])
C_LATENT_STEPS = tl.constexpr(INT_COL["latent_steps"])
C_EXPLICIT_STEPS = tl.constexpr(INT_COL["explicit_steps"])
C_INJ_CONV = tl.constexpr(INT_COL["injected_convergence"])
C_INJ_TERM = tl.constexpr(INT_COL["injected_termination"])
C_FORCED = tl.constexpr(INT_COL["forced_think_end"])
C_WINDOW = tl.constexpr(INT_COL["window"])
C_MAX_SW = tl.constexpr(INT_COL["max_switches"])
C_THINK_BUDGET = tl.constexpr(INT_COL["thinking_budget"])
C_MATH = tl.constexpr(INT_COL["math_explicit"])
C_COLD_STEPS = tl.constexpr(INT_COL["cold_steps"])
C_TOPK = tl.constexpr(INT_COL["soft_topk"])
C_TERM_BUDGET = tl.constexpr(INT_COL["termination_budget"])
C_MAX_NEW = tl.constexpr(INT_COL["max_new_tokens"])
F_H_REF = tl.constexpr(FLOAT_COL["h_ref"])
F_ALPHA = tl.constexpr(FLOAT_COL["alpha0"])
F_BETA = tl.constexpr(FLOAT_COL["beta0"])
F_COLD_THR = tl.constexpr(FLOAT_COL["cold_threshold"])
SWITCH = tl.constexpr(2)
EXPLICIT = tl.constexpr(0)


@triton.jit
def _lse_entropy(m_ptr, s_ptr, t_ptr, r, rmask, NC, NCP: tl.constexpr):
    """Rows r [BR] -> (lse, entropy) [BR] fp32 from the stats partials [R, NC] of `_stats_kernel`
    (rows past R: lse -inf, entropy 0)."""
    c = tl.arange(0, NCP)
    ok = rmask[:, None] & (c[None, :] < NC)
    off = r[:, None] * NC + c[None, :]
    pm = tl.load(m_ptr + off, mask=ok, other=float("-inf"), cache_modifier=".cg")
    ps = tl.load(s_ptr + off, mask=ok, other=0.0, cache_modifier=".cg")
    pt = tl.load(t_ptr + off, mask=ok, other=0.0, cache_modifier=".cg")
    m_all = tl.max(pm, axis=1)
    live = ps > 0
    shift = tl.where(live, pm, 0.0) - tl.where(live, m_all[:, None], 0.0)
    scale = tl.where(live, tl.exp(shift), 0.0)
    ps, pt = scale * ps, scale * (pt + ps * shift)
    s_all = tl.sum(ps, axis=1)
    s_all = tl.where(s_all > 0, s_all, 1.0)  # rows past R: keep log(0) out of the arithmetic
    log_s = tl.log(s_all)
    return m_all + log_s, log_s - tl.sum(pt, axis=1) / s_all


@triton.jit
def _needs_mix(ints_ptr, floats_ptr, slot, rmask, ent, NI, NF):
    """Rows [BR] -> whether the next input may be soft: a superset of what `update` decides
    once the token is known (a sampled `</think>` can only make a step explicit)."""
    ints = ints_ptr + slot * NI
    step = tl.load(ints + C_STEP, mask=rmask, other=0)
    explicit = tl.load(ints + C_EXPLICIT, mask=rmask, other=1) != 0
    first = step == 0
    h_ref = tl.where(first, ent, tl.load(floats_ptr + slot * NF + F_H_REF, mask=rmask, other=0.0))
    stay = tl.where(first, 0, tl.load(ints + C_STAY, mask=rmask, other=0) + 1)
    locked = tl.load(ints + C_LOCKED, mask=rmask, other=1) != 0
    kind = tl.load(ints + C_KIND, mask=rmask, other=0)
    to_explicit = ~first & (kind == SWITCH) & ~explicit & (ent < h_ref)
    to_latent = ~first & explicit & (ent > h_ref) & (stay >= tl.load(ints + C_WINDOW, mask=rmask,
                                                                     other=0)) & ~locked
    explicit_next = explicit ^ (to_explicit | to_latent)
    need = rmask & (kind != EXPLICIT) & (tl.load(ints + C_BUDGET, mask=rmask, other=0) != 0)
    need = need & (tl.load(ints + C_TOPK, mask=rmask, other=1) == 0)
    return need & ((~explicit_next & ~locked) | to_explicit)


@triton.jit
def _stats_kernel(
    logits_ptr, rows_ptr, slots_ptr, ints_ptr, floats_ptr, m_ptr, s_ptr, t_ptr, row_ptr,
    need_ptr, ticket_ptr, copy_ptr, V, stride_b, NC, NI, NF, V_START, V_LEN,
    NCP: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr, ROUND_TYPE: tl.constexpr,
    COPY: tl.constexpr, PDL: tl.constexpr,
):
    if PDL:  # the mixture may launch once every stats program has started; it waits for us
        tl.extra.cuda.gdc_launch_dependents()
    r = tl.program_id(0)
    chunk = tl.program_id(1)
    base = logits_ptr + tl.load(rows_ptr + r).to(tl.int64) * stride_b
    if COPY:  # rows of latent / switch requests keep their shard's rounded logits for the mixture
        kind = tl.load(ints_ptr + tl.load(slots_ptr + r).to(tl.int64) * NI + C_KIND)
        copy_row = copy_ptr + r.to(tl.int64) * V_LEN - V_START
    # running (max, sum of exp, sum of exp * (z - max)) as scalars: each BLOCK is reduced once
    # against its own max, so every logit costs one exp (the per-lane vectors this replaced
    # re-based each lane on every load: two exps per logit)
    m = tl.max(tl.full([BLOCK], float("-inf"), tl.float32), axis=0)
    s = tl.sum(tl.zeros([BLOCK], tl.float32), axis=0)
    t = s
    for off in range(0, CHUNK, BLOCK):
        idx = chunk * CHUNK + off + tl.arange(0, BLOCK)
        z = tl.load(base + idx, mask=idx < V, other=float("-inf")).to(ROUND_TYPE)
        if COPY:
            tl.store(copy_row + idx, z, mask=(kind != EXPLICIT) & (idx >= V_START)
                     & (idx < V_START + V_LEN))
        z = z.to(tl.float32)  # rounded as the model's dtype holds them (the reference's)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        ref = tl.where(m_new > float("-inf"), m_new, 0.0)  # all -inf so far: nothing to add
        finite = z > float("-inf")
        zd = tl.where(finite, z - ref, 0.0)
        w = tl.where(finite, tl.exp(zd), 0.0)
        # re-base (s, t) from m to m_new (where s == 0, m may be -inf: keep it out)
        live = s > 0
        shift = tl.where(live, m - ref, 0.0)
        scale = tl.where(live, tl.exp(shift), 0.0)
        s, t = scale * s + tl.sum(w, axis=0), scale * (t + s * shift) + tl.sum(w * zd, axis=0)
        m = m_new
    tl.store(m_ptr + r * NC + chunk, m)
    tl.store(s_ptr + r * NC + chunk, s)
    tl.store(t_ptr + r * NC + chunk, t)
    tl.debug_barrier()
    if tl.atomic_add(ticket_ptr + r, 1) == NC - 1:  # the row's last chunk: combine, decide
        one = tl.arange(0, 2)  # lane 0 is the row (two lanes: a one-lane tensor is avoided)
        rv = r + one
        rmask = one < 1
        lse, ent = _lse_entropy(m_ptr, s_ptr, t_ptr, rv, rmask, NC, NCP)
        slot = tl.load(slots_ptr + rv, mask=rmask, other=0).to(tl.int64)
        need = _needs_mix(ints_ptr, floats_ptr, slot, rmask, ent, NI, NF)
        tl.store(row_ptr + 2 * rv, lse, mask=rmask)
        tl.store(row_ptr + 2 * rv + 1, ent, mask=rmask)
        tl.store(need_ptr + rv, need.to(tl.int32), mask=rmask)
        tl.store(ticket_ptr + r, 0)


@triton.jit
def _mix_kernel(
    logits_ptr, rows_ptr, row_ptr, need_ptr, table_ptr, part_ptr, mix_ptr, ticket_ptr, copy_ptr,
    R, stride_b, stride_t, V_START, V_LEN, H, split_len,
    ROUND_TYPE: tl.constexpr, BF16X2: tl.constexpr, COPY: tl.constexpr, PDL: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
):
    if PDL:  # launched early (programmatic dependent launch): the stats pass's results first
        tl.extra.cuda.gdc_wait()
    rb = tl.program_id(0)  # fastest: a tile's row blocks run side by side and share its loads
    pid_h = tl.program_id(1)
    split = tl.program_id(2)
    r = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < R
    need = tl.load(need_ptr + r, mask=rmask, other=0) != 0
    if tl.sum(need.to(tl.int32), axis=0) == 0:
        return
    lse = tl.load(row_ptr + 2 * r, mask=need, other=0.0)
    brow = tl.load(rows_ptr + r, mask=rmask, other=0).to(tl.int64)
    h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = h < H
    acc = tl.zeros([BLOCK_R, BLOCK_H], tl.float32)
    v_lo = split * split_len
    v_hi = tl.minimum(v_lo + split_len, V_LEN)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        v = v0 + tl.arange(0, BLOCK_V)
        vmask = v < v_hi
        if COPY:  # the stats pass's rounded copy: half the bytes of fp32 logits (16-bit tables)
            z = tl.load(copy_ptr + r[:, None].to(tl.int64) * V_LEN + v[None, :],
                        mask=need[:, None] & vmask[None, :], other=float("-inf"))
        else:
            z = tl.load(logits_ptr + brow[:, None] * stride_b + (V_START + v)[None, :],
                        mask=need[:, None] & vmask[None, :], other=float("-inf"))
        p = tl.exp(z.to(ROUND_TYPE).to(tl.float32) - lse[:, None])  # [BR, BV] fp32
        e = tl.load(table_ptr + v[:, None].to(tl.int64) * stride_t + h[None, :],
                    mask=vmask[:, None] & hmask[None, :], other=0.0)
        if BF16X2:  # p = hi + lo in bf16: ~16 mantissa bits on tensor cores, fp32 accumulate
            hi = p.to(tl.bfloat16)
            lo = (p - hi.to(tl.float32)).to(tl.bfloat16)
            acc += tl.dot(hi, e, out_dtype=tl.float32)
            acc += tl.dot(lo, e, out_dtype=tl.float32)
        else:
            acc += tl.dot(p, e.to(tl.float32), input_precision="ieee")
    n_split = tl.num_programs(2)
    tile = rmask[:, None] & hmask[None, :]
    out = (r[:, None] * H + h[None, :]).to(tl.int64)
    tl.store(part_ptr + split * R * H + out, acc, mask=tile)
    tl.debug_barrier()
    ticket = ticket_ptr + rb * tl.num_programs(1) + pid_h
    if tl.atomic_add(ticket, 1) == n_split - 1:  # the tile's last split: sum them in order
        total = tl.zeros([BLOCK_R, BLOCK_H], tl.float32)
        for i in range(n_split):
            total += tl.load(part_ptr + i * R * H + out, mask=tile, other=0.0,
                             cache_modifier=".cg")
        tl.store(mix_ptr + out, total, mask=tile)
        tl.store(ticket, 0)

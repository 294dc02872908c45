"""The fused SwiReasoning step's third launch (after sampling, see kernel.py): the state machine
per row, the emitted token, and the next input (mixture + delimiter blend, one rounding) published
into the slot's buffer. Launched by `launch.post_sample`; its plain-torch twin, one request at a
time, is `rio_sglang.reasoning.reference.swir_step`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .kernel import (
    C_BUDGET,
    C_CLOSED,
    C_COLD,
    C_COLD_STEPS,
    C_EXPLICIT,
    C_EXPLICIT_STEPS,
    C_FORCED,
    C_INJ_CONV,
    C_INJ_TERM,
    C_KIND,
    C_LATENT_STEPS,
    C_LOCKED,
    C_MATH,
    C_MAX_NEW,
    C_MAX_SW,
    C_QLEN,
    C_QLOCKS,
    C_QPOS,
    C_STAY,
    C_STEP,
    C_SWITCHES,
    C_TERM_BUDGET,
    C_THINK_BUDGET,
    C_TOPK,
    C_WINDOW,
    EXPLICIT,
    F_ALPHA,
    F_BETA,
    F_COLD_THR,
    F_H_REF,
    SWITCH,
)


@triton.jit
def _update_kernel(
    rows_ptr, slots_ptr, tokens_ptr, row_ptr, ints_ptr, floats_ptr, queue_ptr,
    conv_ptr, term_ptr, math_ptr, mix_ptr, sparse_ptr, special_ptr, pending_ptr, use_ptr,
    history_ptr, stats_ptr, row_out_ptr,
    R, NI, NF, Q, CONV_LEN, TERM_LEN, V, EOS, THINK_END, H, HIST,
    BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_H: tl.constexpr,
    HAS_SPARSE: tl.constexpr,
):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BR] rows (one on a GPU)
    rmask = r < R
    ent = tl.load(row_ptr + 2 * r + 1, mask=rmask, other=0.0)  # from `row_stats`
    slot = tl.load(slots_ptr + r, mask=rmask, other=0).to(tl.int64)
    ints = ints_ptr + slot * NI
    floats = floats_ptr + slot * NF
    brow = tl.load(rows_ptr + r, mask=rmask, other=0).to(tl.int64)
    step = tl.load(ints + C_STEP, mask=rmask, other=0)
    first = step == 0
    budget0 = tl.load(ints + C_BUDGET, mask=rmask, other=0)
    over = budget0 == 0  # the reference finished at the previous step
    kind = tl.load(ints + C_KIND, mask=rmask, other=0)
    # the statistics' old values, loaded with the rest of the row's state (one round trip)
    latent_steps0 = tl.load(ints + C_LATENT_STEPS, mask=rmask, other=0)
    explicit_steps0 = tl.load(ints + C_EXPLICIT_STEPS, mask=rmask, other=0)
    inj_conv0 = tl.load(ints + C_INJ_CONV, mask=rmask, other=0)
    inj_term0 = tl.load(ints + C_INJ_TERM, mask=rmask, other=0)
    forced0 = tl.load(ints + C_FORCED, mask=rmask, other=0)
    # 3. a sampled `</think>` locks; 4. a pending injection replaces the token
    sampled = tl.load(tokens_ptr + brow, mask=rmask, other=0).to(tl.int32)
    locked = (tl.load(ints + C_LOCKED, mask=rmask, other=0) != 0) | (sampled == THINK_END)
    q = tl.arange(0, BLOCK_Q)
    qmask = rmask[:, None] & (q[None, :] < Q)
    qptr = queue_ptr + slot[:, None] * Q + q[None, :]
    queue = tl.load(qptr, mask=qmask, other=0)  # [BR, BQ]
    qpos = tl.load(ints + C_QPOS, mask=rmask, other=0)
    qlen = tl.load(ints + C_QLEN, mask=rmask, other=0)
    pending = qpos < qlen
    head = tl.minimum(qpos, Q - 1)
    queued = tl.sum(tl.where(q[None, :] == head[:, None], queue, 0), axis=1)
    tok = tl.where(pending, queued, sampled)
    qpos = qpos + pending.to(tl.int32)
    is_end = tok == THINK_END
    qlocks = tl.load(ints + C_QLOCKS, mask=rmask, other=0) != 0
    locked = locked | (pending & qlocks & is_end)
    closed = (tl.load(ints + C_CLOSED, mask=rmask, other=0) != 0) | is_end
    # 5. mode update (latent mode never goes explicit on its own)
    explicit = tl.load(ints + C_EXPLICIT, mask=rmask, other=0) != 0
    h_ref = tl.where(first, ent, tl.load(floats + F_H_REF, mask=rmask, other=0.0))
    stay = tl.load(ints + C_STAY, mask=rmask, other=0)
    stay = tl.where(first, stay, stay + 1)
    window = tl.load(ints + C_WINDOW, mask=rmask, other=0)
    to_explicit = ~first & (kind == SWITCH) & ~explicit & (ent < h_ref)
    to_latent = ~first & explicit & (ent > h_ref) & (stay >= window) & ~locked
    flip = to_explicit | to_latent
    explicit = explicit ^ flip
    stay = tl.where(flip, 0, stay)
    h_ref = tl.where(flip, ent, h_ref)
    switches = tl.load(ints + C_SWITCHES, mask=rmask, other=0) + to_explicit.to(tl.int32)
    # 6. is the step explicit?
    in_vocab = (tok >= 0) & (tok < V)
    is_math = tl.load(math_ptr + tl.where(in_vocab, tok, 0), mask=rmask, other=0) != 0
    is_math = is_math & in_vocab & (tl.load(ints + C_MATH, mask=rmask, other=0) != 0)
    is_explicit = (kind == EXPLICIT) | explicit | locked | is_math
    # 7. next input = c_mix * mixture + c_row * special[row]: the delimiter blends
    frac = step.to(tl.float32) / tl.load(ints + C_MAX_NEW, mask=rmask, other=1).to(tl.float32)
    alpha0 = tl.load(floats + F_ALPHA, mask=rmask, other=1.0)
    beta0 = tl.load(floats + F_BETA, mask=rmask, other=1.0)
    a = alpha0 + (1 - alpha0) * frac
    b = beta0 + (1 - beta0) * frac
    c_mix = tl.where(first, 0.9, tl.where(to_latent, a, tl.where(to_explicit, b, 1.0)))
    row = tl.where(first, 0, tl.where(to_latent, 1, tl.where(to_explicit, 2, -1)))
    c_row = tl.where(row >= 0, 1.0 - c_mix, 0.0)
    # 8. switch-count control: convergence, then termination with an answer budget
    m = tl.load(ints + C_MAX_SW, mask=rmask, other=0)
    control = (m > 0) & ~first & to_explicit
    converge = control & (switches >= m) & (switches <= 2 * m)
    terminate = control & (switches > 2 * m)
    conv = tl.load(conv_ptr + q, mask=q < Q, other=0)[None, :]
    term = tl.load(term_ptr + q, mask=q < Q, other=0)[None, :]
    queue = tl.where(converge[:, None], conv, tl.where(terminate[:, None], term, queue))
    qlen = tl.where(converge, CONV_LEN, tl.where(terminate, TERM_LEN, qlen))
    refill = converge | terminate
    qpos = tl.where(refill, 0, qpos)
    qlocks = qlocks & ~refill
    term_budget = tl.load(ints + C_TERM_BUDGET, mask=rmask, other=0)
    budget = tl.where(terminate, term_budget, budget0)
    budget = tl.where((m > 0) & ~first & (budget >= 0), budget - 1, budget)
    # Thinking budget and cold stop (ours): inject a locking `</think>` at the next step.
    cold_steps = tl.load(ints + C_COLD_STEPS, mask=rmask, other=0)
    has_cold = cold_steps > 0
    cold = has_cold & ~closed & (ent < tl.load(floats + F_COLD_THR, mask=rmask, other=0.0))
    cold_count = tl.where(cold, tl.load(ints + C_COLD, mask=rmask, other=0) + 1, 0)
    think_budget = tl.load(ints + C_THINK_BUDGET, mask=rmask, other=0)
    over_budget = (think_budget > 0) & (step + 1 >= think_budget)
    stop = ~closed & (qpos >= qlen) & (over_budget | (has_cold & (cold_count >= cold_steps)))
    queue = tl.where(stop[:, None] & (q[None, :] == 0), THINK_END, queue)
    qlen = tl.where(stop, 1, qlen)
    qpos = tl.where(stop, 0, qpos)
    qlocks = qlocks | stop
    # 9. emit (EOS once the answer budget is spent); a row that only emits keeps its state
    if EOS >= 0:
        tok = tl.where(over, EOS, tok)
    tl.store(tokens_ptr + brow, tok.to(tokens_ptr.dtype.element_ty), mask=rmask)
    latent = ~is_explicit
    record = ~over & (step < HIST)
    tl.store(row_out_ptr + 2 * r, tl.where(record, step, -1), mask=rmask)
    tl.store(row_out_ptr + 2 * r + 1, latent.to(tl.int32), mask=rmask)
    w = rmask & ~over
    use = w & (~is_explicit | to_explicit)
    tl.store(history_ptr + slot * HIST + step, latent.to(tl.int8), mask=w & (step < HIST))
    tl.store(use_ptr + slot, use.to(tl.int8), mask=w)
    tl.store(qptr, queue, mask=qmask & w[:, None])
    tl.store(floats + F_H_REF, h_ref, mask=w)
    tl.store(ints + C_EXPLICIT, explicit.to(tl.int32), mask=w)
    tl.store(ints + C_STAY, stay, mask=w)
    tl.store(ints + C_SWITCHES, switches, mask=w)
    tl.store(ints + C_LOCKED, locked.to(tl.int32), mask=w)
    tl.store(ints + C_CLOSED, closed.to(tl.int32), mask=w)
    tl.store(ints + C_STEP, step + 1, mask=w)
    tl.store(ints + C_QPOS, qpos, mask=w)
    tl.store(ints + C_QLEN, qlen, mask=w)
    tl.store(ints + C_QLOCKS, qlocks.to(tl.int32), mask=w)
    tl.store(ints + C_BUDGET, budget, mask=w)
    tl.store(ints + C_COLD, cold_count, mask=w)
    latent_steps = latent_steps0 + latent.to(tl.int32)
    explicit_steps = explicit_steps0 + is_explicit.to(tl.int32)
    tl.store(ints + C_LATENT_STEPS, latent_steps, mask=w)
    tl.store(ints + C_EXPLICIT_STEPS, explicit_steps, mask=w)
    inj_conv = (inj_conv0 != 0) | converge
    inj_term = (inj_term0 != 0) | terminate
    forced = (forced0 != 0) | stop
    tl.store(ints + C_INJ_CONV, inj_conv.to(tl.int32), mask=w)
    tl.store(ints + C_INJ_TERM, inj_term.to(tl.int32), mask=w)
    tl.store(ints + C_FORCED, forced.to(tl.int32), mask=w)
    stats = stats_ptr + slot * 6  # layout.STAT_FIELDS, from registers (no reload of `ints`)
    tl.store(stats + 0, latent_steps, mask=w)
    tl.store(stats + 1, explicit_steps, mask=w)
    tl.store(stats + 2, switches, mask=w)
    tl.store(stats + 3, inj_conv.to(tl.int32), mask=w)
    tl.store(stats + 4, inj_term.to(tl.int32), mask=w)
    tl.store(stats + 5, forced.to(tl.int32), mask=w)
    if tl.sum(use.to(tl.int32), axis=0) > 0:
        topk = tl.load(ints + C_TOPK, mask=rmask, other=0)
        for h0 in range(0, H, BLOCK_H):
            h = h0 + tl.arange(0, BLOCK_H)
            hm = use[:, None] & (h[None, :] < H)
            mix = tl.load(mix_ptr + r[:, None].to(tl.int64) * H + h[None, :], mask=hm, other=0.0)
            if HAS_SPARSE:  # rows with a soft top-k: their renormalised top-k mixture instead
                sparse = tl.load(sparse_ptr + r[:, None] * H + h[None, :], mask=hm, other=0.0)
                mix = tl.where((topk > 0)[:, None], sparse, mix)
            special = tl.load(special_ptr + tl.maximum(row, 0)[:, None] * H + h[None, :],
                              mask=hm, other=0.0)
            x = c_mix[:, None] * mix + c_row[:, None] * special.to(tl.float32)
            tl.store(pending_ptr + slot[:, None] * H + h[None, :],
                     x.to(pending_ptr.dtype.element_ty), mask=hm)

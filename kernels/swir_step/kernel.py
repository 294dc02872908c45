"""The fused SwiReasoning step: three Triton launches over the stepping rows of a batch.

Called by `rio_sglang.runtime.step` around SGLang's sampler; its plain-torch twin is
`rio_sglang.reasoning.state.ReasoningState.step` (tests/test_swir_step.py compares them).
1. `row_stats` (before sampling): split-V pass over the raw logits -> per (row, chunk) max,
   sum e^(z-max), sum e^(z-max)(z-max); no [B, V] probability tensor.
2. `mix_partials` (before sampling, the logits are still raw): p = exp(z - lse) times this
   rank's vocab shard of the embedding, fp32, for rows whose next input may be soft; a program
   whose rows need none exits before reading a table row.
3. `update` (after sampling): the state machine per row, the emitted token, and the next input
   (mixture + delimiter blend, one rounding) published into the slot's buffer.
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
def _stats_kernel(
    logits_ptr, rows_ptr, m_ptr, s_ptr, t_ptr, V, stride_b, NC,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr, ROUND_TYPE: tl.constexpr,
):
    r = tl.program_id(0)
    chunk = tl.program_id(1)
    base = logits_ptr + tl.load(rows_ptr + r).to(tl.int64) * stride_b
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    t = tl.zeros([BLOCK], tl.float32)
    for off in range(0, CHUNK, BLOCK):
        idx = chunk * CHUNK + off + tl.arange(0, BLOCK)
        z = tl.load(base + idx, mask=idx < V, other=float("-inf"))
        z = z.to(ROUND_TYPE).to(tl.float32)  # as the model's dtype holds them (the reference's)
        m_new = tl.maximum(m, z)
        # re-base (s, t) from m to m_new (where s == 0, m may be -inf: keep it out)
        live = s > 0
        shift = tl.where(live, m, 0.0) - tl.where(live, m_new, 0.0)
        scale = tl.where(live, tl.exp(shift), 0.0)
        s, t = scale * s, scale * (t + s * shift)
        finite = z > float("-inf")
        zd = tl.where(finite, z - tl.where(finite, m_new, 0.0), 0.0)
        w = tl.where(finite, tl.exp(zd), 0.0)
        s += w
        t += w * zd
        m = m_new
    m_all = tl.max(m, axis=0)
    live = s > 0
    shift = tl.where(live, m, 0.0) - tl.where(live, m_all, 0.0)
    scale = tl.where(live, tl.exp(shift), 0.0)
    s, t = scale * s, scale * (t + s * shift)
    tl.store(m_ptr + r * NC + chunk, m_all)
    tl.store(s_ptr + r * NC + chunk, tl.sum(s, axis=0))
    tl.store(t_ptr + r * NC + chunk, tl.sum(t, axis=0))


@triton.jit
def _mix_kernel(
    logits_ptr, rows_ptr, slots_ptr, m_ptr, s_ptr, t_ptr, ints_ptr, floats_ptr, table_ptr,
    part_ptr, R, NC, NI, NF, stride_b, stride_t, V_START, V_LEN, H, split_len,
    NCP: tl.constexpr, ROUND_TYPE: tl.constexpr, BF16X2: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid_h = tl.program_id(0)
    split = tl.program_id(1)
    r = tl.program_id(2) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < R
    # lse and entropy of each row from the stats partials (no nested jit calls: the
    # interpreter re-patches tl at each one)
    c = tl.arange(0, NCP)
    ok = rmask[:, None] & (c[None, :] < NC)
    off = r[:, None] * NC + c[None, :]
    pm = tl.load(m_ptr + off, mask=ok, other=float("-inf"))
    ps = tl.load(s_ptr + off, mask=ok, other=0.0)
    pt = tl.load(t_ptr + off, mask=ok, other=0.0)
    m_all = tl.max(pm, axis=1)
    live = ps > 0
    shift = tl.where(live, pm, 0.0) - tl.where(live, m_all[:, None], 0.0)
    scale = tl.where(live, tl.exp(shift), 0.0)
    ps, pt = scale * ps, scale * (pt + ps * shift)
    s_all = tl.sum(ps, axis=1)
    s_all = tl.where(s_all > 0, s_all, 1.0)  # rows past R: keep log(0) out of the arithmetic
    log_s = tl.log(s_all)
    lse = m_all + log_s
    ent = log_s - tl.sum(pt, axis=1) / s_all
    # Which rows may take a soft input (a superset of what `update` decides once the token is
    # known: a sampled `</think>` can only make a step explicit).
    slot = tl.load(slots_ptr + r, mask=rmask, other=0).to(tl.int64)
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
    need = need & ((~explicit_next & ~locked) | to_explicit)
    if tl.sum(need.to(tl.int32), axis=0) == 0:
        return
    lse = tl.where(need, lse, 0.0)
    brow = tl.load(rows_ptr + r, mask=rmask, other=0).to(tl.int64)
    h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = h < H
    acc = tl.zeros([BLOCK_R, BLOCK_H], tl.float32)
    v_lo = split * split_len
    v_hi = tl.minimum(v_lo + split_len, V_LEN)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        v = v0 + tl.arange(0, BLOCK_V)
        vmask = v < v_hi
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
    out = part_ptr + (split * R + r[:, None]).to(tl.int64) * H + h[None, :]
    tl.store(out, acc, mask=rmask[:, None] & hmask[None, :])


@triton.jit
def _update_kernel(
    rows_ptr, slots_ptr, tokens_ptr, m_ptr, s_ptr, t_ptr, ints_ptr, floats_ptr, queue_ptr,
    conv_ptr, term_ptr, math_ptr, part_ptr, sparse_ptr, special_ptr, pending_ptr, use_ptr,
    history_ptr, stats_ptr, row_out_ptr,
    R, NC, NI, NF, Q, CONV_LEN, TERM_LEN, V, EOS, THINK_END, NS, H, HIST,
    NCP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_H: tl.constexpr,
    HAS_SPARSE: tl.constexpr, ST0: tl.constexpr, ST1: tl.constexpr, ST2: tl.constexpr,
    ST3: tl.constexpr, ST4: tl.constexpr, ST5: tl.constexpr,
):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BR] rows (one on a GPU)
    rmask = r < R
    # lse and entropy of each row from the stats partials (inline: the interpreter re-patches
    # tl at every nested jit call)
    c = tl.arange(0, NCP)
    ok = rmask[:, None] & (c[None, :] < NC)
    off = r[:, None] * NC + c[None, :]
    pm = tl.load(m_ptr + off, mask=ok, other=float("-inf"))
    ps = tl.load(s_ptr + off, mask=ok, other=0.0)
    pt = tl.load(t_ptr + off, mask=ok, other=0.0)
    m_all = tl.max(pm, axis=1)
    live = ps > 0
    shift = tl.where(live, pm, 0.0) - tl.where(live, m_all[:, None], 0.0)
    scale = tl.where(live, tl.exp(shift), 0.0)
    ps, pt = scale * ps, scale * (pt + ps * shift)
    s_all = tl.sum(ps, axis=1)
    s_all = tl.where(s_all > 0, s_all, 1.0)
    ent = tl.log(s_all) - tl.sum(pt, axis=1) / s_all
    slot = tl.load(slots_ptr + r, mask=rmask, other=0).to(tl.int64)
    ints = ints_ptr + slot * NI
    floats = floats_ptr + slot * NF
    brow = tl.load(rows_ptr + r, mask=rmask, other=0).to(tl.int64)
    step = tl.load(ints + C_STEP, mask=rmask, other=0)
    first = step == 0
    budget0 = tl.load(ints + C_BUDGET, mask=rmask, other=0)
    over = budget0 == 0  # the reference finished at the previous step
    kind = tl.load(ints + C_KIND, mask=rmask, other=0)
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
    latent_steps = tl.load(ints + C_LATENT_STEPS, mask=w, other=0) + latent.to(tl.int32)
    explicit_steps = tl.load(ints + C_EXPLICIT_STEPS, mask=w, other=0) + is_explicit.to(tl.int32)
    tl.store(ints + C_LATENT_STEPS, latent_steps, mask=w)
    tl.store(ints + C_EXPLICIT_STEPS, explicit_steps, mask=w)
    inj_conv = (tl.load(ints + C_INJ_CONV, mask=w, other=0) != 0) | converge
    inj_term = (tl.load(ints + C_INJ_TERM, mask=w, other=0) != 0) | terminate
    forced = (tl.load(ints + C_FORCED, mask=w, other=0) != 0) | stop
    tl.store(ints + C_INJ_CONV, inj_conv.to(tl.int32), mask=w)
    tl.store(ints + C_INJ_TERM, inj_term.to(tl.int32), mask=w)
    tl.store(ints + C_FORCED, forced.to(tl.int32), mask=w)
    stats = stats_ptr + slot * 6
    tl.store(stats + 0, tl.load(ints + ST0, mask=w, other=0), mask=w)
    tl.store(stats + 1, tl.load(ints + ST1, mask=w, other=0), mask=w)
    tl.store(stats + 2, tl.load(ints + ST2, mask=w, other=0), mask=w)
    tl.store(stats + 3, tl.load(ints + ST3, mask=w, other=0), mask=w)
    tl.store(stats + 4, tl.load(ints + ST4, mask=w, other=0), mask=w)
    tl.store(stats + 5, tl.load(ints + ST5, mask=w, other=0), mask=w)
    if tl.sum(use.to(tl.int32), axis=0) > 0:
        topk = tl.load(ints + C_TOPK, mask=rmask, other=0)
        for h0 in range(0, H, BLOCK_H):
            h = h0 + tl.arange(0, BLOCK_H)
            hm = use[:, None] & (h[None, :] < H)
            mix = tl.zeros([BLOCK_R, BLOCK_H], tl.float32)
            for split in range(NS):
                mix += tl.load(part_ptr + (split * R + r[:, None]).to(tl.int64) * H + h[None, :],
                               mask=hm, other=0.0)
            if HAS_SPARSE:  # rows with a soft top-k: their renormalised top-k mixture instead
                sparse = tl.load(sparse_ptr + r[:, None] * H + h[None, :], mask=hm, other=0.0)
                mix = tl.where((topk > 0)[:, None], sparse, mix)
            special = tl.load(special_ptr + tl.maximum(row, 0)[:, None] * H + h[None, :],
                              mask=hm, other=0.0)
            x = c_mix[:, None] * mix + c_row[:, None] * special.to(tl.float32)
            tl.store(pending_ptr + slot[:, None] * H + h[None, :],
                     x.to(pending_ptr.dtype.element_ty), mask=hm)

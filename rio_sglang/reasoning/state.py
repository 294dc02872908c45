"""SwiReasoning's per-request state machine, batched and device resident: pure torch, no host syncs.

The decode loop calls `reset_slots` when a request starts (and `release_slots` when it ends),
then `step` once per decode step after sampling; `reference.py::swir_step` is the same algorithm
for one request, written plainly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rio_kernels.swir_step.layout import (
    BOOL_FIELDS,
    EXPLICIT,
    FLOAT_COL,
    FLOAT_FIELDS,
    INT_COL,
    INT_FIELDS,
    LATENT,
    SWITCH,
)
from rio_sglang.reasoning import ops
from rio_sglang.reasoning.spec import ReasoningSpec, ReasoningStats
from rio_sglang.reasoning.tokens import ReasoningTokens

KINDS = {"explicit": EXPLICIT, "latent": LATENT, "switch": SWITCH}
_STAT_FIELDS = [f.name for f in dataclasses.fields(ReasoningStats)]


def _spec_values(spec: ReasoningSpec, max_new_tokens: int) -> dict[str, float | int | bool]:
    return {
        "kind": KINDS[spec.mode],
        "alpha0": spec.alpha0,
        "beta0": spec.beta0,
        "window": spec.window,
        "max_switches": spec.max_switches or 0,
        "thinking_budget": spec.thinking_budget or 0,
        "math_explicit": spec.math_tokens_explicit,
        "cold_threshold": spec.cold_stop_threshold or 0.0,
        "cold_steps": spec.cold_stop_steps or 0,
        "soft_topk": spec.soft_topk or 0,
        "termination_budget": spec.termination_budget,
        "max_new_tokens": max_new_tokens,
    }


@dataclass(frozen=True)
class StepOutput:
    next_token: torch.Tensor  # [B] int64: emitted token, after injections (EOS once the
    # answer budget was spent at the previous step: the request ends there)
    next_embeds: torch.Tensor  # [B, H] embed dtype: the next step's input
    is_latent: torch.Tensor  # [B] bool
    finished: torch.Tensor  # [B] bool: EOS, answer budget spent, or max_new_tokens reached
    stepped: torch.Tensor  # [B] bool: False where the row only emitted EOS (kept its state)


class ReasoningState:
    """Per-slot tensors of shape [num_slots]; `step` reads and writes the rows of a batch."""

    def __init__(
        self, num_slots: int, tokens: ReasoningTokens, vocab_size: int,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.tokens = tokens
        self.vocab_size = vocab_size
        # Two tables (layout.py, read by the fused step kernels too); `t[name]`: a column view.
        self.ints = torch.tensor([list(INT_FIELDS.values())] * num_slots, dtype=torch.int32,
                                 device=self.device)  # [S, NI]
        self.floats = torch.tensor([list(FLOAT_FIELDS.values())] * num_slots,
                                   dtype=torch.float32, device=self.device)  # [S, NF]
        self.t: dict[str, torch.Tensor] = {n: self.ints[:, c] for n, c in INT_COL.items()}
        self.t.update({n: self.floats[:, c] for n, c in FLOAT_COL.items()})
        q = max(len(tokens.convergence_ids), len(tokens.termination_ids))
        self.queue = torch.zeros(num_slots, q, dtype=torch.int32, device=self.device)  # [S, Q]
        self.convergence = self._padded(tokens.convergence_ids, q)  # [Q]
        self.termination = self._padded(tokens.termination_ids, q)  # [Q]
        self.math_mask = torch.zeros(vocab_size, dtype=torch.int8, device=self.device)  # [V]
        math_ids = [i for i in tokens.math_ids if i < vocab_size]
        self.math_mask[torch.tensor(math_ids, dtype=torch.long, device=self.device)] = 1
        self.eos_id = -1 if tokens.eos_id is None else tokens.eos_id
        self.topk_max = 0  # host side: the largest soft_topk ever reset, sizes the top-k path

    def _padded(self, ids: Sequence[int], q: int) -> torch.Tensor:
        return torch.tensor(list(ids) + [0] * (q - len(ids)), dtype=torch.int32, device=self.device)

    def reset_slots(
        self, slot_idx: Sequence[int], specs: Sequence[ReasoningSpec],
        max_new_tokens: Sequence[int],
    ) -> None:
        """Starts requests: every field of each slot back to its reset value, then the spec's."""
        assert len(slot_idx) == len(specs) == len(max_new_tokens)
        rows = [_spec_values(s.validate(self.vocab_size), n) for s, n in zip(specs, max_new_tokens)]
        self.topk_max = max([self.topk_max] + [int(r["soft_topk"]) for r in rows])
        idx = torch.tensor(list(slot_idx), dtype=torch.long, device=self.device)
        for table, fields in ((self.ints, INT_FIELDS), (self.floats, FLOAT_FIELDS)):
            values = [[r.get(name, value) for name, value in fields.items()] for r in rows]
            table.index_copy_(0, idx, torch.tensor(values, dtype=table.dtype).to(self.device))
        self.queue.index_fill_(0, idx, 0)

    def release_slots(self, slot_idx: Sequence[int]) -> None:
        """Finished or aborted requests: the slots go back to plain explicit decoding."""
        self.reset_slots(slot_idx, [ReasoningSpec(mode="explicit")] * len(slot_idx),
                         [1] * len(slot_idx))

    def stats(self, slot_idx: Sequence[int]) -> list[ReasoningStats]:
        """Response metadata of the given slots (one host copy: call it when requests finish)."""
        idx = torch.tensor(list(slot_idx), dtype=torch.long, device=self.device)
        cols = {n: self.t[n].index_select(0, idx).tolist() for n in _STAT_FIELDS}
        cols = {n: [bool(v) for v in c] if n in BOOL_FIELDS else c for n, c in cols.items()}
        return [ReasoningStats(**{n: c[i] for n, c in cols.items()}) for i in range(len(idx))]

    def _mixture(self, p0: torch.Tensor, topk: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """p0: [B, V] fp32, topk: [B] (0 = full) -> [B, H]: p0 @ E, or renormalised top-k of p0."""
        # Every row gets the dense mixture: which rows use top-k is known on the device only.
        dense = ops.soft_embed(p0, weight)  # [B, H]
        if self.topk_max == 0:
            return dense
        kmax = min(self.topk_max, p0.shape[1])
        vals, ids = torch.topk(p0, kmax, dim=-1)  # [B, kmax]
        keep = torch.arange(kmax, device=p0.device)[None, :] < topk[:, None]  # [B, kmax]
        vals = torch.where(keep, vals, 0.0)
        vals = vals / vals.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        sparse = ops.soft_embed_topk(vals, torch.where(keep, ids, -1), weight)  # [B, H]
        return torch.where((topk > 0)[:, None], sparse, dense)

    def step(
        self, slot_idx: torch.Tensor, logits_rows: torch.Tensor, sampled_tokens: torch.Tensor,
        embed_weight: torch.Tensor,
    ) -> StepOutput:
        """slot_idx: [B] distinct slots, logits_rows: [B, V] raw, sampled_tokens: [B] the
        model's own samples (an injection replaces them here), embed_weight: [V, H]. Same
        per-step algorithm as `reference.swir_step`. A row whose answer budget ran out at its
        previous step (where the reference stops) emits EOS and keeps its state."""
        s = slot_idx.to(self.device, torch.long)  # [B]
        g = {name: t.index_select(0, s) for name, t in self.t.items()}  # [B] each
        g.update({name: g[name].bool() for name in BOOL_FIELDS})
        tk = self.tokens
        step, first = g["step"], g["step"] == 0
        over = g["answer_budget"] == 0  # the reference finished at the previous step
        # 2. entropy of the raw distribution
        p0 = torch.softmax(logits_rows.float(), dim=-1)  # [B, V]
        H = ops.softmax_entropy(logits_rows)  # [B] fp32
        # 3. a sampled `</think>` locks; 4. a pending injection replaces the token
        sampled = sampled_tokens.to(self.device, torch.long)  # [B]
        locked = g["locked"] | (sampled == tk.think_end_id)
        queue = old_queue = self.queue.index_select(0, s)  # [B, Q] (torch.where below copies)
        pending = g["queue_pos"] < g["queue_len"]
        head = g["queue_pos"].clamp(max=queue.shape[1] - 1).long()
        tok = torch.where(pending, queue.gather(1, head[:, None]).squeeze(1).long(), sampled)
        queue_pos = g["queue_pos"] + pending.int()
        is_end = tok == tk.think_end_id
        locked = locked | (pending & g["queue_locks"] & is_end)
        closed = g["closed"] | is_end
        # 5. mode update (latent mode never goes explicit on its own)
        explicit = g["explicit"]
        h_ref = torch.where(first, H, g["h_ref"])
        stay = torch.where(first, g["stay"], g["stay"] + 1)
        to_explicit = ~first & (g["kind"] == SWITCH) & ~explicit & (H < h_ref)
        to_latent = ~first & explicit & (H > h_ref) & (stay >= g["window"]) & ~locked
        flip = to_explicit | to_latent
        explicit = explicit ^ flip
        stay = torch.where(flip, 0, stay)
        h_ref = torch.where(flip, H, h_ref)
        switches = g["switches"] + to_explicit.int()
        # 6. is the step explicit?
        is_math = self.math_mask[tok].bool() & g["math_explicit"]
        is_explicit = (g["kind"] == EXPLICIT) | explicit | locked | is_math
        # 7. embeddings, with the delimiter blends
        w = embed_weight
        frac = step.float() / g["max_new_tokens"].float()
        a = g["alpha0"] + (1 - g["alpha0"]) * frac
        b = g["beta0"] + (1 - g["beta0"]) * frac
        latent_emb = self._mixture(p0, g["soft_topk"], w)  # [B, H]
        blend_id = torch.where(first, tk.newline_id, torch.where(to_latent, tk.think_id, -1))
        latent_emb = ops.delimiter_blend(latent_emb, w, blend_id, torch.where(first, 0.9, a))
        end_id = torch.where(to_explicit, tk.think_end_id, -1)
        explicit_emb = torch.where(
            to_explicit[:, None], ops.delimiter_blend(latent_emb, w, end_id, b), F.embedding(tok, w)
        )
        next_embeds = torch.where(is_explicit[:, None], explicit_emb, latent_emb)  # [B, H]
        # 8. switch-count control: convergence, then termination with an answer budget
        m = g["max_switches"]
        control = (m > 0) & ~first & to_explicit
        converge = control & (switches >= m) & (switches <= 2 * m)
        terminate = control & (switches > 2 * m)
        queue = torch.where(converge[:, None], self.convergence, queue)
        queue = torch.where(terminate[:, None], self.termination, queue)
        queue_len = torch.where(converge, len(tk.convergence_ids), g["queue_len"])
        queue_len = torch.where(terminate, len(tk.termination_ids), queue_len)
        refill = converge | terminate
        queue_pos = torch.where(refill, 0, queue_pos)
        queue_locks = g["queue_locks"] & ~refill
        budget = torch.where(terminate, g["termination_budget"], g["answer_budget"])
        budget = torch.where((m > 0) & ~first & (budget >= 0), budget - 1, budget)
        # Thinking budget and cold stop (ours): inject a locking `</think>` at the next step.
        has_cold = g["cold_steps"] > 0
        cold = has_cold & ~closed & (H < g["cold_threshold"])
        cold_count = torch.where(cold, g["cold_count"] + 1, 0)
        over_budget = (g["thinking_budget"] > 0) & (step + 1 >= g["thinking_budget"])
        cold_stop = has_cold & (cold_count >= g["cold_steps"])
        stop = ~closed & (queue_pos >= queue_len) & (over_budget | cold_stop)
        queue[:, 0] = torch.where(stop, tk.think_end_id, queue[:, 0])
        queue_len = torch.where(stop, 1, queue_len)
        queue_pos = torch.where(stop, 0, queue_pos)
        queue_locks = queue_locks | stop
        # 9. emit; count; finish on EOS, the answer budget or max_new_tokens
        if self.eos_id >= 0:
            tok = torch.where(over, self.eos_id, tok)
        finished = (tok == self.eos_id) | (budget == 0) | (step + 1 >= g["max_new_tokens"])
        queue = torch.where(over[:, None], old_queue, queue)
        self._write(s, over, g, queue, {
            "explicit": explicit, "h_ref": h_ref, "stay": stay, "switches": switches,
            "locked": locked, "closed": closed, "step": step + 1, "queue_pos": queue_pos,
            "queue_len": queue_len, "queue_locks": queue_locks, "answer_budget": budget,
            "cold_count": cold_count,
            "latent_steps": g["latent_steps"] + (~is_explicit).int(),
            "explicit_steps": g["explicit_steps"] + is_explicit.int(),
            "injected_convergence": g["injected_convergence"] | converge,
            "injected_termination": g["injected_termination"] | terminate,
            "forced_think_end": g["forced_think_end"] | stop,
        })
        return StepOutput(tok, next_embeds.to(w.dtype), ~is_explicit, finished, ~over)

    def _write(self, s: torch.Tensor, keep: torch.Tensor, old: dict[str, torch.Tensor],
               queue: torch.Tensor, rows: dict[str, torch.Tensor]) -> None:
        """New values of the rows' fields, except where `keep` holds: their `old` ones."""
        self.queue.index_copy_(0, s, queue)
        for name, value in rows.items():
            value = torch.where(keep, old[name], value.to(self.t[name].dtype))
            self.t[name].index_copy_(0, s, value)

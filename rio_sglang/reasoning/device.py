"""One rank's SwiReasoning step on the device: the per-slot state, what it publishes for the next
decode step, and the embedding rows it mixes (this rank's vocab shard). SGLang-free.

`runtime/sampler.py` calls `pre` where SGLang hands over the raw logits and `post` with the
sampled tokens; both only launch kernels (`rio_kernels.swir_step`), never wait on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rio_kernels.swir_step import launch
from rio_kernels.swir_step.layout import (
    BOOL_FIELDS,
    FLOAT_FIELDS,
    INT_COL,
    INT_FIELDS,
    NEWLINE_ROW,
    STAT_FIELDS,
    THINK_END_ROW,
    THINK_ROW,
)
from rio_sglang.reasoning.spec import HISTORY, ReasoningSpec
from rio_sglang.reasoning.state import ReasoningState
from rio_sglang.reasoning.tokens import ReasoningTokens


class DeviceStep:
    """table: [>= v_len, H] embedding rows of vocab ids [v_start, v_start + v_len) (the whole
    table at TP 1, a VocabParallelEmbedding shard under TP); special: [3, H] the newline,
    `<think>` and `</think>` rows; all_reduce: sums a tensor over the TP group (None at TP 1)."""

    def __init__(self, num_slots: int, tokens: ReasoningTokens, vocab: int, table: torch.Tensor,
                 v_start: int, v_len: int, special: torch.Tensor,
                 all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        dev, (_, hidden) = table.device, table.shape
        self.state = state = ReasoningState(num_slots, tokens, vocab, dev)
        self.vocab, self.table, self.v_start, self.v_len = vocab, table, v_start, v_len
        self.all_reduce = all_reduce
        # Host-controlled: admitted and not yet released. The forward embeds `pending` only where
        # this and `use` hold: under PP a relay may land after its request was released.
        self.active = torch.zeros(num_slots, dtype=torch.bool, device=dev)
        self.tables = launch.StepTables(
            ints=state.ints, floats=state.floats, queue=state.queue,
            convergence=state.convergence, termination=state.termination,
            convergence_len=len(tokens.convergence_ids), termination_len=len(tokens.termination_ids),
            math_mask=state.math_mask, special=special.to(table.dtype).contiguous(),
            pending=torch.zeros(num_slots, hidden, dtype=table.dtype, device=dev),
            use=torch.zeros(num_slots, dtype=torch.int8, device=dev),
            history=torch.full((num_slots, HISTORY), -1, dtype=torch.int8, device=dev),
            stats=torch.zeros(num_slots, len(STAT_FIELDS), dtype=torch.int32, device=dev),
            eos_id=state.eos_id, think_end_id=tokens.think_end_id,
            tickets=torch.zeros(num_slots + launch.ticket_count(num_slots, hidden),
                                dtype=torch.int32, device=dev))

    @staticmethod
    def special_rows(tokens: ReasoningTokens) -> list[int]:
        """Vocab ids of the [3, H] special rows, in layout order."""
        ids = {NEWLINE_ROW: tokens.newline_id, THINK_ROW: tokens.think_id,
               THINK_END_ROW: tokens.think_end_id}
        return [ids[i] for i in range(3)]

    def buffer_bytes(self) -> dict[str, int]:
        """Device memory this rank holds for latent reasoning, by buffer (the log line)."""
        t = self.tables
        named = {"pending inputs": t.pending, "history": t.history, "stats": t.stats,
                 "state": self.state.ints, "state floats": self.state.floats,
                 "queue": t.queue, "special rows": t.special, "math mask": t.math_mask,
                 "tickets": t.tickets}
        return {name: x.numel() * x.element_size() for name, x in named.items()}

    def reset(self, slots: Sequence[int], specs: Sequence[ReasoningSpec],
              max_new_tokens: Sequence[int]) -> None:
        """New latent / switch requests, before their first forward (host side, once each)."""
        self.state.reset_slots(slots, specs, max_new_tokens)
        idx = torch.tensor(list(slots), dtype=torch.long, device=self.table.device)
        self.tables.use.index_fill_(0, idx, 0)
        self.active.index_fill_(0, idx, True)
        self.tables.history.index_fill_(0, idx, -1)
        self.tables.stats.index_fill_(0, idx, 0)

    def release(self, slots: Sequence[int]) -> None:
        """Finished or aborted requests: their slots embed tokens again."""
        self.state.release_slots(slots)
        idx = torch.tensor(list(slots), dtype=torch.long, device=self.table.device)
        self.tables.use.index_fill_(0, idx, 0)
        self.active.index_fill_(0, idx, False)

    def state_width(self) -> int:
        """Columns of `state_rows`: ints, floats (their int32 bits), queue, use."""
        return len(INT_FIELDS) + len(FLOAT_FIELDS) + self.state.queue.shape[1] + 1

    def state_rows(self, slots: torch.Tensor) -> torch.Tensor:
        """slots: [R] -> [R, state_width()] int32: each slot's whole state as one row (a fresh
        tensor, three launches), what `restore` takes back."""
        t = self.tables
        whole = torch.cat([t.ints, t.floats.view(torch.int32), t.queue,
                           t.use.view(-1, 1).to(torch.int32)], dim=1)
        return whole.index_select(0, slots)

    def answer_budget(self, slots: torch.Tensor) -> torch.Tensor:
        """slots: [R] -> [R] int32 their answer budgets now (0: the next step only emits EOS)."""
        return self.state.t["answer_budget"].index_select(0, slots)

    def restore(self, slot: int, row: torch.Tensor, pending: torch.Tensor | None,
                modes: bytes) -> None:
        """A reset slot takes back a state a `state_rows` row held (host side, once, when a
        retracted request is prefilled again): its state, next input (`pending`, None: embed
        the token), per-step modes (1 latent, 0 explicit) and statistics."""
        t, ni, nf = self.tables, len(INT_FIELDS), len(FLOAT_FIELDS)
        dev = self.table.device
        row = row.to(torch.int32)
        ints = row[:ni].to(dev)
        t.ints[slot] = ints
        t.floats[slot] = row[ni:ni + nf].view(torch.float32).to(dev)
        t.queue[slot] = row[ni + nf:-1].to(dev)
        use = int(row[-1]) != 0 and pending is not None
        t.use[slot] = int(use)
        if use:
            t.pending[slot] = pending.to(device=dev, dtype=t.pending.dtype)
        hist = torch.full((HISTORY,), -1, dtype=torch.int8)
        kept = list(modes[:HISTORY])
        if kept:
            hist[: len(kept)] = torch.tensor(kept, dtype=torch.int8)
        t.history[slot] = hist.to(dev)
        t.stats[slot] = torch.stack([ints[INT_COL[name]] for name in STAT_FIELDS])
        self.active[slot] = True

    def soft_input(self, slots: torch.Tensor) -> torch.Tensor:
        """slots: [B] -> [B] bool: does the next decode step embed the slot's `pending`?"""
        return self.active.index_select(0, slots) & (self.tables.use.index_select(0, slots) != 0)

    def pre(self, logits: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor) -> launch.PreSample:
        """logits: [B, V'] raw, rows / slots: [R] int64 -> what `post` needs (2-3 launches, and
        one all-reduce of [R, H] fp32 under TP)."""
        sparse = self._topk(logits, rows, slots) if self.state.topk_max else None
        pre = launch.pre_sample(logits, rows, slots, self.tables, self.table, self.v_start,
                                self.v_len, self.vocab, sparse)
        if self.all_reduce is not None:
            pre = launch.reduce_partials(pre, self.all_reduce)
        return pre

    def post(self, pre: launch.PreSample, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [B] sampled, rewritten in place -> row_out [R, 2] int32 (launch.post_sample)."""
        return launch.post_sample(pre, tokens, self.tables)

    def _topk(self, logits: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """[R, H] fp32 partial top-k mixtures of this rank's shard (opt-in `soft_topk` rows;
        the others' rows are computed and ignored)."""
        z = logits.index_select(0, rows)[:, : self.vocab].to(self.table.dtype).float()  # [R, V]
        p0 = torch.softmax(z, dim=-1)
        k = self.state.t["soft_topk"].index_select(0, slots)  # [R]
        kmax = min(self.state.topk_max, self.vocab)
        vals, ids = torch.topk(p0, kmax, dim=-1)  # [R, kmax]
        keep = torch.arange(kmax, device=z.device)[None, :] < k[:, None]
        vals = torch.where(keep, vals, 0.0)
        vals = vals / vals.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        local = ids - self.v_start
        mine = keep & (local >= 0) & (local < self.v_len)
        rows_e = self.table[local.clamp(0, self.v_len - 1)].float()  # [R, kmax, H]
        return torch.einsum("rk,rkh->rh", torch.where(mine, vals, 0.0), rows_e)

    def read_final(self, slot: int) -> dict:
        """A finished request's statistics and per-step modes (one host copy); slot released."""
        values = self.tables.stats[slot].tolist()
        row = self.tables.history[slot].tolist()
        self.release([slot])
        stats = {n: bool(v) if n in BOOL_FIELDS else int(v) for n, v in zip(STAT_FIELDS, values)}
        return {**stats, "modes": "".join("L" if m == 1 else "E" for m in row if m >= 0)}

    def relay(self, slots: torch.Tensor, row_out: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the first pipeline stage publishes for these rows (PP only)."""
        t = self.tables
        return {"slots": slots, "row_out": row_out, "pending": t.pending.index_select(0, slots),
                "use": t.use.index_select(0, slots), "stats": t.stats.index_select(0, slots)}

    def publish(self, relay: dict[str, torch.Tensor]) -> None:
        """First pipeline stage: store the last stage's step results for these slots."""
        t, s = self.tables, relay["slots"].long()
        t.pending.index_copy_(0, s, relay["pending"].to(t.pending.dtype))  # read only if active
        t.use.index_copy_(0, s, relay["use"].to(t.use.dtype))
        t.stats.index_copy_(0, s, relay["stats"].to(t.stats.dtype))
        col = relay["row_out"][:, 0].long()
        keep = t.history[s, col.clamp(min=0)]
        mode = torch.where(col >= 0, relay["row_out"][:, 1].to(torch.int8), keep)
        t.history.index_put_((s, col.clamp(min=0)), mode)

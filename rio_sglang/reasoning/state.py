"""SwiReasoning's per-slot state tables on the device (layout: `rio_kernels.swir_step.layout`).

`device.py::DeviceStep` owns one: `reset_slots` when a request starts, `release_slots` when it
ends; the fused step kernels (`rio_kernels.swir_step`) read and write the tables in between.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rio_kernels.swir_step.layout import (
    EXPLICIT,
    FLOAT_COL,
    FLOAT_FIELDS,
    INT_COL,
    INT_FIELDS,
    LATENT,
    SWITCH,
)
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.reasoning.tokens import ReasoningTokens

KINDS = {"explicit": EXPLICIT, "latent": LATENT, "switch": SWITCH}


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


class ReasoningState:
    """Per-slot tables: `ints` [S, NI] int32, `floats` [S, NF] fp32, `queue` [S, Q] int32."""

    def __init__(
        self, num_slots: int, tokens: ReasoningTokens, vocab_size: int,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.tokens = tokens
        self.vocab_size = vocab_size
        # Two tables (layout.py, the fused step kernels' columns); `t[name]`: a column view.
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

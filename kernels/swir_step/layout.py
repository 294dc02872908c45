"""Column layout of SwiReasoning's per-slot device state, shared by the tables' owner
(`rio_sglang.reasoning.state`) and the fused step kernels (`kernel.py`, `update.py`).

Two tables per slot: `ints [S, len(INT_FIELDS)] int32` (booleans as 0 / 1) and
`floats [S, len(FLOAT_FIELDS)] fp32`. Each entry: name -> value after reset.
"""

from __future__ import annotations

EXPLICIT, LATENT, SWITCH = 0, 1, 2  # request kinds (`kind` column)

INT_FIELDS = {
    "kind": EXPLICIT,
    "explicit": 0,  # the mode; a request starts latent
    "stay": 0,
    "switches": 0,
    "locked": 0,
    "closed": 0,  # `</think>` emitted
    "step": 0,
    "queue_pos": 0,
    "queue_len": 0,
    "queue_locks": 0,
    "answer_budget": -1,
    "cold_count": 0,
    "latent_steps": 0,
    "explicit_steps": 0,
    "injected_convergence": 0,
    "injected_termination": 0,
    "forced_think_end": 0,
    "window": 512,
    "max_switches": 0,  # 0: no switch-count control
    "thinking_budget": 0,  # 0: none
    "math_explicit": 1,
    "cold_steps": 0,  # 0: no cold stop
    "soft_topk": 0,  # 0: full vocabulary
    "termination_budget": 32,
    "max_new_tokens": 1,
}
FLOAT_FIELDS = {
    "h_ref": 0.0,
    "alpha0": 1.0,
    "beta0": 0.7,
    "cold_threshold": 0.0,
}
BOOL_FIELDS = frozenset({
    "explicit", "locked", "closed", "queue_locks", "injected_convergence",
    "injected_termination", "forced_think_end", "math_explicit",
})
# Response statistics, in `ReasoningStats` order: the step kernel also writes them per slot.
STAT_FIELDS = ("latent_steps", "explicit_steps", "switches", "injected_convergence",
               "injected_termination", "forced_think_end")

INT_COL = {name: i for i, name in enumerate(INT_FIELDS)}
FLOAT_COL = {name: i for i, name in enumerate(FLOAT_FIELDS)}
# Special embedding rows every rank keeps whole (V-sharded tables lack them): [3, H].
NEWLINE_ROW, THINK_ROW, THINK_END_ROW = 0, 1, 2

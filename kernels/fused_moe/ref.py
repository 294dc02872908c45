"""Plain-torch fp32 reference for the routed-expert MoE (SiLU-gated MLP per expert).

Called by test_fused_moe.py and bench_fused_moe.py to check `kernel.fused_moe`; runs anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fp8 import act_group, act_round_trip, dequantize


def local_expert_ids(
    topk_ids: torch.Tensor, num_local: int, expert_map: torch.Tensor | None
) -> torch.Tensor:
    """topk_ids: [T, topk] global ids (negative = no expert) -> [T, topk] int64 local ids, -1 = skip."""
    ids = topk_ids.long()  # [T, topk]
    if expert_map is not None:
        in_map = (ids >= 0) & (ids < expert_map.numel())  # [T, topk]
        ids = torch.where(in_map, expert_map.long()[ids.clamp(0, expert_map.numel() - 1)], -1)
    return torch.where((ids >= 0) & (ids < num_local), ids, -1)  # [T, topk]


def fused_moe_ref(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    expert_map: torch.Tensor | None = None,
    w13_scale: torch.Tensor | None = None,
    w2_scale: torch.Tensor | None = None,
    block_shape: tuple[int, int] | None = None,
    act_quant: bool = False,
) -> torch.Tensor:
    """out[t] = sum_k w[t, k] * W2[e] @ (silu(W1g[e] @ x[t]) * (W1u[e] @ x[t])), e = topk_ids[t, k].

    x: [T, H]; w13: [E, 2I, H] (gate rows, then up rows); w2: [E, H, I];
    topk_weights: [T, topk] fp32; topk_ids: [T, topk] int (global ids).
    expert_map: optional [E_global] int, global id -> local row of w13/w2 or -1. Slots whose
    expert is not local (or whose id is negative) contribute 0: under expert parallelism each
    rank returns its partial sum and the caller all-reduces. Returns [T, H] in x.dtype.
    FP8 experts (e4m3 w13 / w2 with scales as in fp8.py): dequantized to fp32 first.
    act_quant (FP8 experts only; w8a8 as fused_moe's grouped path runs it): x, and h rounded to
    x.dtype, pass through e4m3 per token group (fp8.act_group wide) before each GEMM.
    """
    if act_quant and w13_scale is None:
        raise ValueError("act_quant (w8a8) needs FP8 experts")
    if w13_scale is not None:
        w13 = dequantize(w13, w13_scale, block_shape)
        w2 = dequantize(w2, w2_scale, block_shape)
    num_experts, two_i, hidden = w13.shape
    inter = two_i // 2
    assert x.shape[1] == hidden and w2.shape == (num_experts, hidden, inter)
    assert topk_weights.shape == topk_ids.shape and topk_ids.shape[0] == x.shape[0]
    ids = local_expert_ids(topk_ids, num_experts, expert_map)  # [T, topk]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)  # [T, H]
    xq = act_round_trip(x, act_group(block_shape, hidden)) if act_quant else x.float()  # [T, H]
    for e in range(num_experts):
        t_idx, k_idx = torch.nonzero(ids == e, as_tuple=True)  # [n], [n]
        if t_idx.numel() == 0:
            continue
        xe = xq[t_idx]  # [n, H]
        gate, up = w13[e].float().split(inter, dim=0)  # [I, H], [I, H]
        h = F.silu(torch.einsum("nh,ih->ni", xe, gate)) * torch.einsum("nh,ih->ni", xe, up)  # [n, I]
        if act_quant:
            h = act_round_trip(h.to(x.dtype), act_group(block_shape, inter))  # [n, I]
        y = torch.einsum("ni,hi->nh", h, w2[e].float())  # [n, H]
        y = y * topk_weights[t_idx, k_idx].float()[:, None]  # [n, H]
        out.index_add_(0, t_idx, y)  # [T, H]
    return out.to(x.dtype)  # [T, H]


# W8a8 on a GPU matches its reference normwise, not elementwise. Hopper's fp8 tensor cores sum a
# K step's e4m3 products in a short accumulator (Triton's default fast fp8 accumulation), so the
# kernel's h differs from the reference's (median 0.3% on an H200, TP 8 shapes) and rounds to a
# different e4m3 value wherever it sits near a rounding midpoint: one e4m3 step there (1/16 to 1/8
# of h), which moves an output by step * |w2| * routing weight; at I=128 (w2 ~ I^-0.5) that reaches
# 0.04-0.05 over T=4096's 16M outputs, past a bf16 elementwise tolerance, though no index or scale
# is wrong. Such an element had a rounding error of half a step either way, so re-rounding it does
# not make the result less accurate: the kernel must be as close to the w8a16 result as the exact
# w8a8 arithmetic is (TO_A16), and its deviation from that arithmetic must stay well below the
# quantization error itself (TO_A8). A wrong scale or group index errs by 10-50% of h: far past both.
# A plain-torch simulation (this reference with gate/up off by 0.13% of their rms, which gives the
# H200's median h error and its elementwise max error 0.04 at TP 8, T=4096) gives these ratios:
W8A8_TO_A16 = 1.1  # |out - a16| / |a8 - a16|: 1.00 simulated (T=8 and T=4096)
W8A8_TO_A8 = 0.5  # |out - a8| / |a8 - a16|: 0.28 simulated at T=4096 (0.36 at T=8, 2.3x error)


def w8a8_errors(out: torch.Tensor, ref_a8: torch.Tensor, ref_a16: torch.Tensor) -> dict:
    """Frobenius errors of a w8a8 result against its reference (act_quant=True) and the w8a16 one
    (act_quant=False), in units of |ref_a8 - ref_a16| (what quantizing activations moves); ok
    when within W8A8_TO_A16 and W8A8_TO_A8."""
    out, ref_a8, ref_a16 = out.float(), ref_a8.float(), ref_a16.float()
    quant = (ref_a8 - ref_a16).norm().clamp_min(1e-30)
    errs = {"to_a16": ((out - ref_a16).norm() / quant).item(),
            "to_a8": ((out - ref_a8).norm() / quant).item()}
    return {**errs, "ok": errs["to_a16"] <= W8A8_TO_A16 and errs["to_a8"] <= W8A8_TO_A8}

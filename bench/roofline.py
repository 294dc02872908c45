"""Decode roofline at concurrency 1: the bytes one decode step must move, from a config.json
dict through launch/params.py and launch/memory.py, against the device's copy bandwidth.

Called by bench/serve_bench.py; `measure_copy_gbs` runs in its own process (`python -m
bench.roofline`) so that no CUDA context sits beside the servers.
"""

from __future__ import annotations

import json
import sys

from launch.memory import gdn_state_bytes_per_seq, kv_bytes_per_token
from launch.params import full_attention_layers, weights
from rio_sglang.tensor_table import EMBED, LM_HEAD

PARTS = ("experts", "shared_expert", "router_and_norms", "attention", "gdn", "lm_head",
         "embedding_row", "kv_cache", "gdn_state")


def decode_step_bytes(cfg: dict, context: int) -> dict[str, int]:
    """Bytes one text-only decode step of one sequence at `context` tokens moves, at TP 1.

    Weights are read once: the routed experts only for the top-k of E, the embedding table only
    for the new token's row, everything else whole (no vision tower, no MTP head). The KV cache
    of the full-attention layers is read over `context` tokens and written for one; the Gated
    DeltaNet conv and SSM state is read and written back.
    """
    text = cfg["text_config"]
    share = text["num_experts_per_tok"] / text["num_experts"]
    out = dict.fromkeys(PARTS, 0)
    for w in weights({**cfg, "vision_config": None}):
        if w.split == "experts":
            out["experts"] += round(w.rank_bytes(1) * share)
        elif w.name == EMBED.source:
            out["embedding_row"] += w.cols * w.dtype_bytes
        elif w.name == LM_HEAD.source:
            out["lm_head"] += w.rank_bytes(1)
        elif w.group in ("shared", "attention", "gdn"):
            out[{"shared": "shared_expert"}.get(w.group, w.group)] += w.rank_bytes(1)
        else:  # the router (mlp.gate) and the RMSNorm weights
            out["router_and_norms"] += w.rank_bytes(1)
    n_attn = len(full_attention_layers(text))
    out["kv_cache"] = kv_bytes_per_token(text, 1, n_attn) * (context + 1)
    out["gdn_state"] = 2 * gdn_state_bytes_per_seq(text, 1, text["num_hidden_layers"] - n_attn)
    return out


def roofline(cfg: dict, context: int, step_ms: float, bandwidth_gbs: float | None) -> dict:
    """Bytes per step over the measured step time, as GB/s and as a fraction of the device's."""
    parts = decode_step_bytes(cfg, context)
    total = sum(parts.values())
    achieved = total / (step_ms / 1e3) / 1e9
    return {"context_tokens": context, "bytes_per_step": total, "bytes": parts,
            "step_ms": step_ms, "achieved_gbs": achieved,
            "fraction": achieved / bandwidth_gbs if bandwidth_gbs else None}


def measure_copy_gbs(nbytes: int = 4 << 30, iters: int = 20) -> float:
    """GB/s of a device-to-device copy of `nbytes` (each byte read and written: 2 x nbytes)."""
    import torch

    src = torch.arange(nbytes // 4, dtype=torch.int32, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    if not torch.equal(dst, src):  # never time a copy that does not copy
        raise RuntimeError("device copy returned wrong data")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3
    return 2 * src.numel() * src.element_size() * iters / seconds / 1e9


def main() -> int:
    import torch

    name = torch.cuda.get_device_name()
    sys.stdout.write(json.dumps({"name": name, "bandwidth_gbs": measure_copy_gbs()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

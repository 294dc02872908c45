"""FP8 variants of a tiny checkpoint, in the released key and scale layouts.

Called by `write_tiny_checkpoint(..., fp8=...)`. "block": Qwen's FP8 releases (e4m3 weights,
fp32 `weight_scale_inv` per bn x bk block, `quantization_config` quant_method "fp8");
"channel": llm-compressor's compressed-tensors FP8 (e4m3 weights, fp32 `weight_scale` [N, 1],
dynamic per-token activations). The routed experts are always FP8; `linears=True` also
quantizes attention, Gated DeltaNet and shared-expert projections (served by SGLang's own FP8
linear methods, which need a GPU); otherwise those stay bf16, listed as not converted.
"""

from __future__ import annotations

import re

from rio_kernels.fused_moe import fp8
from rio_sglang.tensor_table import LM, MTP_RULES, RULES

FP8_KINDS = ("block", "channel")
# Module paths left in bf16 (SGLang matches them on dotted boundaries): the router and gates,
# in_proj_a / b (a row per head: too few for a block), the output head and the vision tower.
KEEP = ["lm_head", "model.visual", "mlp.gate", "shared_expert_gate", "in_proj_a", "in_proj_b"]
KEEP_LINEARS = ["self_attn", "linear_attn", "shared_expert"]


def converted(name: str, linears: bool) -> bool:
    """Is this bf16 checkpoint tensor stored in e4m3: a routed expert's weight (the table's
    per-expert rows), and with `linears` the other linears of the text model's layers (the
    table's FP8 rows: their keys may carry a scale) but those KEEP names."""
    row = next((r for r in (*RULES, *MTP_RULES) if r.pattern.match(name)), None)
    if row is None or row.layout == "per-expert":
        return row is not None
    module = "." + name.rsplit(".", 1)[0] + "."
    return (linears and row.fp8 and name.startswith(LM + "layers.")
            and not any(f".{k}." in module for k in KEEP))


def quantize_tensors(tensors: dict, kind: str, block: tuple[int, int], linears: bool) -> dict:
    """Per-expert checkpoint tensors -> the same keys with FP8 weights plus their scales."""
    if kind not in FP8_KINDS:
        raise ValueError(f"fp8 kind {kind!r} not in {FP8_KINDS}")
    out = {}
    for name, t in tensors.items():
        if not converted(name, linears):
            out[name] = t
            continue
        stem = name[: -len(".weight")]
        if kind == "block":
            q, s = fp8.quantize_block(t.float(), block)
            out[stem + ".weight_scale_inv"] = s  # [ceil(N/bn), ceil(K/bk)] fp32
        else:
            q, s = fp8.quantize_channel(t.float())
            out[stem + ".weight_scale"] = s[:, None]  # [N, 1] fp32
        out[name] = q
    return out


def quantization_config(kind: str, block: tuple[int, int], linears: bool) -> dict:
    """config.json's `quantization_config` for the checkpoint `quantize_tensors` wrote."""
    keep = KEEP + ([] if linears else KEEP_LINEARS)
    if kind == "block":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": list(block), "modules_to_not_convert": keep}
    scheme = {"weights": {"num_bits": 8, "type": "float", "strategy": "channel",
                          "symmetric": True, "dynamic": False, "observer": "minmax"},
              "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                    "symmetric": True, "dynamic": True, "observer": None},
              "output_activations": None, "targets": ["Linear"]}
    # compressed-tensors matches `ignore` by exact name, dotted suffix or `re:` regex.
    ignore = [f"re:(.*\\.)?{re.escape(m)}(\\..*)?$" for m in keep]
    return {"quant_method": "compressed-tensors", "format": "float-quantized",
            "quantization_status": "compressed", "config_groups": {"group_0": scheme},
            "ignore": ignore, "kv_cache_scheme": None}


def dequantized(tensors: dict, block: tuple[int, int] | None) -> dict:
    """FP8 checkpoint tensors -> fp32 weights under the bf16 keys (scales folded in): what the
    server's experts compute with, for a transformers reference on the same weights.
    block: the checkpoint's `weight_block_size` (None for channel scales)."""
    out = {}
    for name, t in tensors.items():
        if name.endswith((".weight_scale_inv", ".weight_scale")):
            continue
        if t.dtype != fp8.FP8:
            out[name] = t
            continue
        stem = name[: -len(".weight")]
        if block is not None:
            out[name] = fp8.dequantize(t, tensors[stem + ".weight_scale_inv"], block)
        else:
            out[name] = fp8.dequantize(t, tensors[stem + ".weight_scale"][:, 0], None)
    return out

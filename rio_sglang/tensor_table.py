"""The tensor table: one row per kind of checkpoint tensor, its size and the parameter it fills.

Read backwards (the keys each parameter of a rank needs) by the strict loader, weights.py; read
forwards (every tensor of a config.json, its size and TP split) by the memory calculator,
launch/params.py; its FP8 linears by tiny/fp8.py. Adding a kind of tensor is one row here plus
the layer code its fill calls. No SGLang import here.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

LM = "model.language_model."
LAYER = re.escape(LM) + r"layers\.(\d+)\."
# Field -> its values' regex, where a row does not list them. `part`: a weight or its FP8 scale
# (`weight_scale_inv` per block: Qwen's FP8 releases; `weight_scale` per channel:
# compressed-tensors); a model holds the one its quant config names, the other is unexpected.
SCALES = r"weight_scale_inv|weight_scale"
BF16, FP32 = 2, 4  # bytes per element
FIELDS = {"layer": r"\d+", "expert": r"\d+", "block": r"\d+", "part": "weight|" + SCALES,
          "scale": SCALES}


@dataclass(frozen=True)
class Size:
    """A checkpoint tensor's shape over the letters of `dims` ("G*Hq*D, H"), how SGLang 0.5.23
    divides its parameter over TP ranks, and the bytes per element it keeps. `split`: "column"
    (rows over TP), "row" (columns over TP), "rep" (whole on every rank), "kv" (by KV head, one
    whole head per rank below TP), "vocab" (rows padded to 64, then over TP), "experts"
    (FusedMoE: I over TP)."""

    shape: str
    split: str
    dtype_bytes: int = BF16

    def of(self, d: dict[str, int]) -> tuple[int, ...]:
        return tuple(math.prod(int(x) if x.isdigit() else d[x] for x in dim.split("*"))
                     for dim in self.shape.split(", "))


def dims(cfg: dict) -> dict[str, int]:
    """The letters of the table's shapes, from a config.json dict: V vocab, H hidden, E experts,
    I / Is routed / shared expert intermediate, D head dim, Hq / Hkv heads, G 2 where q_proj
    holds an output gate per head; Gated DeltaNet: Hk / Hv heads, Dk / Dv head dims, K conv
    kernel, Cv conv channels [q | k | v]; vision: C width, Iv MLP, M merger input (C x merge^2),
    O output, Np positions, a patch Ci x Tp x P x P."""
    t, v = cfg["text_config"], cfg.get("vision_config") or {}
    d = {"V": t["vocab_size"], "H": t["hidden_size"], "E": t["num_experts"],
         "I": t["moe_intermediate_size"], "Is": t["shared_expert_intermediate_size"],
         "D": t["head_dim"], "Hq": t["num_attention_heads"], "Hkv": t["num_key_value_heads"],
         "G": 2 if t.get("attn_output_gate", True) else 1, "Hk": t["linear_num_key_heads"],
         "Hv": t["linear_num_value_heads"], "Dk": t["linear_key_head_dim"],
         "Dv": t["linear_value_head_dim"], "K": t["linear_conv_kernel_dim"]}
    d["Cv"] = 2 * d["Hk"] * d["Dk"] + d["Hv"] * d["Dv"]
    if v:
        d |= {"C": v["hidden_size"], "Iv": v["intermediate_size"], "O": v["out_hidden_size"],
              "M": v["hidden_size"] * v["spatial_merge_size"] ** 2, "Ci": v["in_channels"],
              "Np": v["num_position_embeddings"], "Tp": v["temporal_patch_size"],
              "P": v["patch_size"]}
    return d


@dataclass(frozen=True)
class Row:
    """Checkpoint tensors named `source` (a template over {fields}) of `size` fill the parameter
    named `target` (over the same fields) by `fill(model, param or None, fields, full tensor,
    key)`, which returns False for a tensor it checked but another expert-parallel rank keeps.
    `each[field]`: its values, a tuple, a dict {value: its Size} or a function of (model,
    fields) giving what this rank holds; a field only `source` names (an expert id, q / k / v)
    is read backwards from it. `group`: the part of the model (attention rows sit on
    full-attention layers, gdn ones on the others); `layout` tags the alternative expert
    layouts."""

    source: str
    target: str
    fill: Callable
    size: Size | None
    group: str
    each: dict
    layout: str | None
    pattern: re.Pattern  # a checkpoint key this row reads
    target_pattern: re.Pattern  # a parameter this row fills

    @property
    def fields(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.source)

    @property
    def fp8(self) -> bool:
        """A linear layer: its FP8 form carries a scale (`part` open to SCALES)."""
        return "{part}" in self.source and "part" not in self.each

    def size_of(self, f: dict) -> Size:
        """The Size of the tensor whose fields are `f`."""
        return next((v[f[k]] for k, v in self.each.items() if isinstance(v, dict)), self.size)

    def keys(self, model, f: dict) -> list[str]:
        """The checkpoint keys this row would read into the parameter whose fields are `f`."""
        names = [n for n in self.fields if n not in f]
        values = [v(model, f) if callable(v) else v for v in (self.each[n] for n in names)]
        return [self.source.format(**f, **dict(zip(names, vs, strict=True)))
                for vs in itertools.product(*values)]


def _regex(template: str, each: dict) -> re.Pattern:
    def field(m: re.Match) -> str:
        v = each.get(m.group(1))
        rx = "|".join(map(re.escape, v)) if isinstance(v, tuple | dict) else FIELDS[m.group(1)]
        return f"(?P<{m.group(1)}>{rx})"

    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", field, re.escape(template)) + "$")


def _row(source: str, target: str, fill: Callable, size: Size | None = None, group: str = "",
         layout: str | None = None, **each) -> Row:
    return Row(source, target, fill, size, group, each, layout, _regex(source, each),
               _regex(target, each))


def _copy(model, param, f, w, name) -> None:
    """Into one parameter through its own (TP-aware) weight_loader, or a plain copy."""
    if param is None:
        raise KeyError(name)
    loader = getattr(param, "weight_loader", None)
    # Unsharded (TP 1) the parameter's shape is the checkpoint's; sharded, SGLang's own
    # loaders narrow the full tensor and check the slice.
    if (loader is None or model.tp_size == 1) and tuple(param.shape) != tuple(w.shape):
        raise ValueError(f"shape {tuple(w.shape)}, expected {tuple(param.shape)}")
    if loader is None:
        param.data.copy_(w)
    else:
        loader(param, w)


def _embed(model, param, f, w, name) -> bool | None:
    """Read by every stage: the embedding lives on the first; a last stage that is not the
    first keeps its TP rank's vocab rows of it for latent mixtures."""
    if getattr(model, "keep_latent_embed", None) is not None:
        model.keep_latent_embed(w)
    if not first_stage(model):
        return False
    _copy(model, param, f, w, name)


def first_stage(model) -> bool:
    """Is this the first pipeline stage (or a model without stages, such as the MTP head)?"""
    return getattr(getattr(getattr(model, "model", None), "pp_group", None), "is_first_rank", True)


def _layer(model, f):
    return model.model.layers[int(f["layer"])]


def _shared(model, param, f, w, name) -> None:
    _layer(model, f).mlp.load_shared(f["proj"], w, name, f["part"])


def _fused(model, param, f, w, name) -> None:
    _layer(model, f).mlp.load_fused(f["proj"], w, name)


def _expert(model, param, f, w, name) -> bool:
    mlp = _layer(model, f).mlp
    return mlp.load_expert(int(f["expert"]), f["proj"], w, name, f.get("scale", "weight"))


def _local_experts(model, f) -> range:
    return _layer(model, f).mlp.local_experts


def _scale_names(model, f) -> tuple[str, ...]:
    """The expert scale a serialized FP8 checkpoint has; none for bf16 or quantized at load."""
    q = _layer(model, f).mlp.quant
    return (q.scale_name,) if q is not None and q.serialized else ()


GATE_UP = ("gate_proj", "up_proj")


def layer_rows(at: str) -> tuple[Row, ...]:
    """One decoder layer's rows, its checkpoint keys under `at` + "{layer}." (the text model's
    layers, or the MTP head's)."""
    src, dst = at + "{layer}.", "model.layers.{layer}."
    experts = src + "mlp.experts.{expert}.{proj}."
    kv = Size("Hkv*D, H", "kv")
    return (
        _row(src + "{norm}.weight", dst + "{norm}.weight", _copy, Size("H", "rep"), "norm",
             norm=("input_layernorm", "post_attention_layernorm")),
        _row(src + "self_attn.{qkv}_proj.{part}", dst + "self_attn.qkv_proj.{part}",
             lambda m, p, f, w, k: _layer(m, f).self_attn.load_qkv(f["qkv"], w, k, f["part"]),
             group="attention", qkv={"q": Size("G*Hq*D, H", "column"), "k": kv, "v": kv}),
        _row(src + "self_attn.o_proj.{part}", dst + "self_attn.o_proj.{part}", _copy,
             Size("H, Hq*D", "row"), "attention"),
        _row(src + "self_attn.{norm}.weight", dst + "self_attn.{norm}.weight", _copy,
             Size("D", "rep"), "attention", norm=("q_norm", "k_norm")),
        _row(src + "linear_attn.in_proj_qkv.{part}", dst + "linear_attn.in_proj_qkv.{part}",
             lambda m, p, f, w, k: _layer(m, f).linear_attn.load_in_proj_qkv(w, k, f["part"]),
             Size("Cv, H", "column"), "gdn"),
        _row(src + "linear_attn.conv1d.weight", dst + "linear_attn.conv_weight",
             lambda m, p, f, w, k: _layer(m, f).linear_attn.load_conv1d(w, k),
             Size("Cv, 1, K", "column"), "gdn"),
        _row(src + "linear_attn.{vec}", dst + "linear_attn.{vec}",  # SGLang keeps A_log in fp32
             lambda m, p, f, w, k: _layer(m, f).linear_attn.load_per_head(p, w, k), group="gdn",
             vec={"A_log": Size("Hv", "column", FP32), "dt_bias": Size("Hv", "column")}),
        _row(src + "linear_attn.{proj}.{part}", dst + "linear_attn.{proj}.{part}", _copy,
             group="gdn", proj={"in_proj_z": Size("Hv*Dv, H", "column"),
                                "in_proj_b": Size("Hv, H", "column"),
                                "in_proj_a": Size("Hv, H", "column"),
                                "out_proj": Size("H, Hv*Dv", "row")}),
        _row(src + "linear_attn.norm.weight", dst + "linear_attn.norm.weight", _copy,
             Size("Dv", "rep"), "gdn"),
        _row(src + "mlp.gate.{part}", dst + "mlp.gate.{part}", _copy, Size("E, H", "rep"), "moe"),
        _row(src + "mlp.shared_expert_gate.{part}", dst + "mlp.shared_expert_gate.{part}", _copy,
             Size("1, H", "rep"), "shared"),
        _row(src + "mlp.shared_expert.{proj}.{part}", dst + "mlp.shared_gate_up.{part}", _shared,
             Size("Is, H", "column"), "shared", proj=GATE_UP),
        _row(src + "mlp.shared_expert.{proj}.{part}", dst + "mlp.shared_down.{part}", _shared,
             Size("H, Is", "row"), "shared", proj=("down_proj",)),
        # Routed experts, one tensor per expert and projection (bf16 weights quantized at load
        # fill the scales alongside; launch/memory.py sizes scales from the block) ...
        _row(experts + "weight", dst + "mlp.w13", _expert, Size("I, H", "experts"), "moe",
             "per-expert", proj=GATE_UP, expert=_local_experts),
        _row(experts + "weight", dst + "mlp.w2", _expert, Size("H, I", "experts"), "moe",
             "per-expert", proj=("down_proj",), expert=_local_experts),
        _row(experts + "{scale}", dst + "mlp.w13_scale", _expert, group="moe", proj=GATE_UP,
             expert=_local_experts, scale=_scale_names),
        _row(experts + "{scale}", dst + "mlp.w2_scale", _expert, group="moe",
             proj=("down_proj",), expert=_local_experts, scale=_scale_names),
        # ... or stacked over experts (transformers' layout: gate_up [E, 2I, H], down [E, H, I]).
        _row(src + "mlp.experts.{proj}", dst + "mlp.w13", _fused, Size("E, 2*I, H", "experts"),
             "moe", "fused", proj=("gate_up_proj",)),
        _row(src + "mlp.experts.{proj}", dst + "mlp.w2", _fused, Size("E, H, I", "experts"),
             "moe", "fused", proj=("down_proj",)),
    )


def _visual(path: str, size: Size | None = None, **each) -> Row:
    """A vision-tower tensor: the checkpoint's `model.visual.` + path fills `visual.` + path."""
    return _row("model.visual." + path, "visual." + path, _copy, size, "vision", **each)


def _linear(n: str, k: str, split: str) -> dict:
    """A vision linear's weight [n, k] and bias [n] (a row-parallel layer's bias: whole)."""
    return {"weight": Size(f"{n}, {k}", split), "bias": Size(n, "rep" if split == "row" else split)}


EMBED = _row(LM + "embed_tokens.weight", "model.embed_tokens.weight", _embed, Size("V, H", "vocab"),
             "embed")
LM_HEAD = _row("lm_head.weight", "lm_head.weight", _copy, Size("V, H", "vocab"), "embed")
BLOCK = "blocks.{block}."
RULES: tuple[Row, ...] = (
    EMBED, LM_HEAD,
    _row(LM + "norm.weight", "model.norm.weight", _copy, Size("H", "rep"), "norm"),
    *layer_rows(LM + "layers."),
    _visual("patch_embed.proj.{part}",
            part={"weight": Size("C, Ci, Tp, P, P", "rep"), "bias": Size("C", "rep")}),
    _visual("pos_embed.weight", Size("Np, C", "vocab")),
    _visual(BLOCK + "{norm}.{part}", Size("C", "rep"), norm=("norm1", "norm2"),
            part=("weight", "bias")),
    _row("model.visual." + BLOCK + "attn.qkv.{part}", "visual." + BLOCK + "attn.qkv_proj.{part}",
         _copy, group="vision", part=_linear("3*C", "C", "column")),
    _visual(BLOCK + "attn.proj.{part}", part=_linear("C", "C", "row")),
    _visual(BLOCK + "mlp.linear_fc1.{part}", part=_linear("Iv", "C", "column")),
    _visual(BLOCK + "mlp.linear_fc2.{part}", part=_linear("C", "Iv", "row")),
    _visual("merger.norm.{part}", Size("C", "rep"), part=("weight", "bias")),
    _visual("merger.linear_fc1.{part}", part=_linear("M", "M", "column")),
    _visual("merger.linear_fc2.{part}", part=_linear("O", "M", "row")),
)
# Left to the MTP draft model (`models/qwen3_5_moe_mtp.py`, built for NEXTN speculative decoding).
SKIPPED = re.compile(r"^mtp\.")
# The MTP head reads its own tensors (its decoder layer is `mtp.layers.0.*`, full attention) and
# the target's embedding and output head, which it shares.
MTP_RULES: tuple[Row, ...] = (
    _row("mtp.fc.weight", "fc.weight", _copy, Size("H, 2*H", "rep"), "mtp"),  # nn.Linear
    _row("mtp.{norm}.weight", "{norm}.weight", _copy, Size("H", "rep"), "mtp",
         norm=("pre_fc_norm_embedding", "pre_fc_norm_hidden")),
    _row("mtp.norm.weight", "model.norm.weight", _copy, Size("H", "rep"), "mtp"),
    *layer_rows("mtp.layers."),
    EMBED, LM_HEAD,
)


def mtp_name(name: str) -> str | None:
    """The key MTP_RULES read a checkpoint tensor under (its own); None for the target's."""
    return name if name.startswith("mtp.") or name in (EMBED.source, LM_HEAD.source) else None


def stage_of(name: str) -> str | int | None:
    """Where a target-model tensor lives under pipeline parallelism: "first" (the embedding, the
    vision tower), "last" (the final norm, lm_head), or its decoder layer's index."""
    if name == EMBED.source or name.startswith("model.visual."):
        return "first"
    m = re.match(LAYER, name)
    if m:
        return int(m.group(1))
    return "last" if re.match(re.escape(LM) + r"norm\.|lm_head\.", name) else None

"""Checkpoint tensor -> our parameter: one table row per kind of tensor, and a thin strict loop.

Called by the models' `load_weights`. A `Row` names a checkpoint tensor (a template), the
parameter it fills and the function that fills it. Read backwards, the same rows list the
checkpoint tensors each parameter of this rank needs (`expected`), so loading fails naming every
missing tensor by its checkpoint key beside the parameter it would fill, and every unexpected or
wrongly shaped one by its key. Tensors of another pipeline stage (`elsewhere`) or expert-parallel
rank (`ExpertStore.load_expert`) are left to it. No SGLang import here.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)
LM = "model.language_model."
LAYER = re.escape(LM) + r"layers\.(\d+)\."
# Field -> its values' regex, where a row does not list them. `part`: a weight or its FP8 scale
# (`weight_scale_inv` per block: Qwen's FP8 releases; `weight_scale` per channel:
# compressed-tensors); a model holds the one its quant config names, the other is unexpected.
SCALES = r"weight_scale_inv|weight_scale"
FIELDS = {"layer": r"\d+", "expert": r"\d+", "path": r".+", "part": "weight|" + SCALES,
          "scale": SCALES}


class WeightLoadError(RuntimeError):
    """Raised with every problem at once: missing tensors as `<parameter> needs <checkpoint
    key>`, unexpected ones by key, wrongly shaped ones as `<key>: <why> (fills <parameter>)`."""


@dataclass(frozen=True)
class Row:
    """Checkpoint tensors named `source` (a template over {fields}) fill the parameter named
    `target` (over the same fields) by `fill(model, param or None, fields, full tensor, key)`,
    which returns False for a tensor it checked but another expert-parallel rank keeps.
    `each[field]`: its values, a tuple or a function of (model, fields) giving what this rank
    holds; a field only `source` names (an expert id, q / k / v) is read backwards from it.
    `layout` tags the alternative expert layouts."""

    source: str
    target: str
    fill: Callable
    each: dict
    layout: str | None
    pattern: re.Pattern  # a checkpoint key this row reads
    target_pattern: re.Pattern  # a parameter this row fills

    def keys(self, model, f: dict) -> list[str]:
        """The checkpoint keys this row would read into the parameter whose fields are `f`."""
        names = [n for n in re.findall(r"\{(\w+)\}", self.source) if n not in f]
        values = [v(model, f) if callable(v) else v for v in (self.each[n] for n in names)]
        return [self.source.format(**f, **dict(zip(names, vs, strict=True)))
                for vs in itertools.product(*values)]


def _regex(template: str, each: dict) -> re.Pattern:
    def field(m: re.Match) -> str:
        v = each.get(m.group(1))
        rx = "|".join(map(re.escape, v)) if isinstance(v, tuple) else FIELDS[m.group(1)]
        return f"(?P<{m.group(1)}>{rx})"

    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", field, re.escape(template)) + "$")


def _row(source: str, target: str, fill: Callable, layout: str | None = None, **each) -> Row:
    return Row(source, target, fill, each, layout, _regex(source, each), _regex(target, each))


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
    if not _first_stage(model):
        return False
    _copy(model, param, f, w, name)


def _first_stage(model) -> bool:
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
    return (
        _row(src + "{norm}.weight", dst + "{norm}.weight", _copy,
             norm=("input_layernorm", "post_attention_layernorm")),
        _row(src + "self_attn.{qkv}_proj.{part}", dst + "self_attn.qkv_proj.{part}",
             lambda m, p, f, w, k: _layer(m, f).self_attn.load_qkv(f["qkv"], w, k, f["part"]),
             qkv=("q", "k", "v")),
        _row(src + "self_attn.o_proj.{part}", dst + "self_attn.o_proj.{part}", _copy),
        _row(src + "self_attn.{norm}.weight", dst + "self_attn.{norm}.weight", _copy,
             norm=("q_norm", "k_norm")),
        _row(src + "linear_attn.in_proj_qkv.{part}", dst + "linear_attn.in_proj_qkv.{part}",
             lambda m, p, f, w, k: _layer(m, f).linear_attn.load_in_proj_qkv(w, k, f["part"])),
        _row(src + "linear_attn.conv1d.weight", dst + "linear_attn.conv_weight",
             lambda m, p, f, w, k: _layer(m, f).linear_attn.load_conv1d(w, k)),
        _row(src + "linear_attn.{vec}", dst + "linear_attn.{vec}",
             lambda m, p, f, w, k: _layer(m, f).linear_attn.load_per_head(p, w, k),
             vec=("A_log", "dt_bias")),
        _row(src + "linear_attn.{proj}.{part}", dst + "linear_attn.{proj}.{part}", _copy,
             proj=("in_proj_z", "in_proj_b", "in_proj_a", "out_proj")),
        _row(src + "linear_attn.norm.weight", dst + "linear_attn.norm.weight", _copy),
        _row(src + "mlp.{proj}.{part}", dst + "mlp.{proj}.{part}", _copy,
             proj=("gate", "shared_expert_gate")),
        _row(src + "mlp.shared_expert.{proj}.{part}", dst + "mlp.shared_gate_up.{part}", _shared,
             proj=GATE_UP),
        _row(src + "mlp.shared_expert.{proj}.{part}", dst + "mlp.shared_down.{part}", _shared,
             proj=("down_proj",)),
        # Routed experts, one tensor per expert and projection (bf16 weights quantized at load
        # fill the scales alongside) ...
        _row(experts + "weight", dst + "mlp.w13", _expert, "per-expert", proj=GATE_UP,
             expert=_local_experts),
        _row(experts + "weight", dst + "mlp.w2", _expert, "per-expert", proj=("down_proj",),
             expert=_local_experts),
        _row(experts + "{scale}", dst + "mlp.w13_scale", _expert, proj=GATE_UP,
             expert=_local_experts, scale=_scale_names),
        _row(experts + "{scale}", dst + "mlp.w2_scale", _expert, proj=("down_proj",),
             expert=_local_experts, scale=_scale_names),
        # ... or stacked over experts (transformers' layout: gate_up [E, 2I, H], down [E, H, I]).
        _row(src + "mlp.experts.{proj}", dst + "mlp.w13", _fused, "fused", proj=("gate_up_proj",)),
        _row(src + "mlp.experts.{proj}", dst + "mlp.w2", _fused, "fused", proj=("down_proj",)),
    )


EMBED = _row(LM + "embed_tokens.weight", "model.embed_tokens.weight", _embed)
LM_HEAD = _row("lm_head.weight", "lm_head.weight", _copy)
RULES: tuple[Row, ...] = (
    EMBED, LM_HEAD,
    _row(LM + "norm.weight", "model.norm.weight", _copy),
    *layer_rows(LM + "layers."),
    _row("model.visual.{path}.attn.qkv.{part}", "visual.{path}.attn.qkv_proj.{part}", _copy,
         part=("weight", "bias")),
    _row("model.visual.{path}", "visual.{path}", _copy),
)
# Left to the MTP draft model (`models/qwen3_5_moe_mtp.py`, built for NEXTN speculative decoding).
SKIPPED = re.compile(r"^mtp\.")
# The MTP head reads its own tensors (its decoder layer is `mtp.layers.0.*`) and the target's
# embedding and output head, which it shares.
MTP_RULES: tuple[Row, ...] = (
    _row("mtp.fc.weight", "fc.weight", _copy),
    _row("mtp.{norm}.weight", "{norm}.weight", _copy,
         norm=("pre_fc_norm_embedding", "pre_fc_norm_hidden")),
    _row("mtp.norm.weight", "model.norm.weight", _copy),
    *layer_rows("mtp.layers."),
    EMBED, LM_HEAD,
)


def mtp_name(name: str) -> str | None:
    """The key MTP_RULES read a checkpoint tensor under (its own); None for the target's."""
    return name if name.startswith("mtp.") or name in (EMBED.source, LM_HEAD.source) else None


def elsewhere(model, name: str) -> bool:
    """True for a checkpoint tensor another pipeline stage loads: a layer outside this stage's
    range, the vision tower off the first stage (images are embedded there; SGLang leaves later
    stages' vision tower partly unbuilt), the final norm and lm_head off the last. (Every stage
    reads the embedding: see `_embed`.)"""
    text = getattr(model, "model", None)
    if text is None or not hasattr(text, "owns_layer"):
        return False
    if name.startswith("model.visual."):
        return not text.pp_group.is_first_rank
    m = re.match(LAYER, name)
    if m:
        i = int(m.group(1))
        return i < model.config.num_hidden_layers and not text.owns_layer(i)
    if re.match(re.escape(LM) + r"norm\.|lm_head\.", name):
        return not text.pp_group.is_last_rank
    return False


def expected(model, rules: tuple[Row, ...], layout: str | None) -> tuple[dict, list[str]]:
    """({checkpoint key: the parameter it fills} for every parameter this rank holds, the
    parameters no row fills). Each parameter is read by the first row whose target it is,
    among those of the checkpoint's expert `layout` (all rows if it showed none)."""
    rows = [r for r in rules if layout is None or r.layout in (None, layout)]
    keys, unfilled = {}, []
    for name, _ in model.named_parameters():
        if name.startswith("visual.") and not _first_stage(model):
            continue  # loaded by the first stage only (see `elsewhere`)
        row, m = next(((r, m) for r in rows if (m := r.target_pattern.match(name))), (None, None))
        if row is None:
            unfilled.append(f"{name} (no checkpoint tensor fills it)")
            continue
        keys.update(dict.fromkeys(row.keys(model, m.groupdict()), name))
    return keys, unfilled


def _first(items: list, n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_checkpoint(model, weights: Iterable, rules: tuple[Row, ...] = RULES,
                    reads: Callable[[str], str | None] | None = None,
                    label: str = "the model") -> int:
    """Load every (key, tensor); raise WeightLoadError listing all problems. Returns count.

    `reads` (the MTP draft's `mtp_name`) is None for a tensor another model loads."""
    params = dict(model.named_parameters())
    kept, misshapen = set(), set()
    layouts: dict[str, set] = {}  # expert layout -> the parameters its tensors filled
    unexpected, wrong, twice, skipped, n = [], [], [], [], 0
    for name, w in weights:
        if reads is None and SKIPPED.match(name):
            skipped.append(name)
        if (reads(name) is None if reads else SKIPPED.match(name)) or elsewhere(model, name):
            continue
        row, m = next(((r, m) for r in rules if (m := r.pattern.match(name))), (None, None))
        if row is None:
            unexpected.append(name)
            continue
        target = row.target.format(**m.groupdict())
        try:
            here = row.fill(model, params.get(target), m.groupdict(), w, name)
        except KeyError:
            unexpected.append(name)
            continue
        except (ValueError, AssertionError, RuntimeError, IndexError) as e:
            why = str(e) if name in str(e) else f"{name}: {e}"
            wrong.append(f"{why} (fills {target})")
            misshapen.add(name)
            continue
        n += 1
        if row.layout is not None:
            layouts.setdefault(row.layout, set()).add(target)
        if here is False:
            continue
        if name in kept:
            twice.append(name)
        kept.add(name)
    # The checkpoint's expert layout fills most parameters; the other's tensors are unexpected.
    layout = max(layouts, key=lambda k: len(layouts[k]), default=None)
    need, unfilled = expected(model, rules, layout)
    missing = sorted(f"{p} needs {k}" for k, p in need.items()
                     if k not in kept and k not in misshapen) + unfilled
    unexpected += sorted(kept - set(need))
    problems = {"missing": missing, "unexpected": unexpected, "wrongly shaped": wrong,
                "loaded twice": twice}
    if any(problems.values()):
        raise WeightLoadError(f"checkpoint does not match {label}; " + "; ".join(
            f"{len(v)} {k}: {_first(v)}" for k, v in problems.items() if v))
    if skipped:
        log.warning("%d mtp.* tensors left to the MTP draft model (loaded only with "
                    "--speculative-algorithm NEXTN)", len(skipped))
    return n

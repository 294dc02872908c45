"""Checkpoint name -> our parameter: one mapping table and a thin strict loop.

Called by the model's `load_weights`. Every checkpoint name must match a rule and every
parameter of the built model must be filled (`expected_fills`), shapes checked on the way, so
loading is strict about missing, unexpected and wrongly shaped tensors. Tensors that belong to
another pipeline stage or expert-parallel rank (`elsewhere`, `SparseMoe.load_expert`) are left
to it. No SGLang import here.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)
LM = r"^model\.language_model\."
LAYER = LM + r"layers\.(\d+)\."
# A linear layer's weight, or the scale its FP8 form adds: `weight_scale_inv` per block (Qwen's
# FP8 releases), `weight_scale` per channel (compressed-tensors). Which one a model expects
# follows its quant config; the other is unexpected.
PART = r"\.(weight|weight_scale_inv|weight_scale)$"


class WeightLoadError(RuntimeError):
    """Raised with every missing, unexpected and wrongly shaped name at once."""


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern
    load: Callable  # (model, match, tensor, name) -> list of (param name, fills)


def _param(target: str):
    """Copy into one parameter through its own (TP-aware) weight_loader."""

    def load(model, m, w, name):
        target_name = target.format(*m.groups())
        param = model.rio_params[target_name]
        loader = getattr(param, "weight_loader", None)
        # Unsharded (TP 1) the parameter's shape is the checkpoint's; sharded, SGLang's own
        # loaders narrow the full tensor and check the slice.
        if (loader is None or model.tp_size == 1) and tuple(param.shape) != tuple(w.shape):
            raise ValueError(f"shape {tuple(w.shape)}, expected {tuple(param.shape)}")
        if loader is None:
            param.data.copy_(w)
        else:
            loader(param, w)
        return [(target_name, 1)]

    return load


def _embed(model, m, w, name):
    """Read by every stage: the embedding lives on the first; a last stage that is not the
    first keeps its TP rank's vocab rows of it for latent mixtures."""
    loaded = _param("model.embed_tokens.weight")(model, m, w, name) if _first_stage(model) else []
    keep = getattr(model, "keep_latent_embed", None)
    if keep is not None:
        keep(w)
    return loaded


def _first_stage(model) -> bool:
    """Is this the first pipeline stage (or a model without stages, such as the MTP head)?"""
    return getattr(getattr(getattr(model, "model", None), "pp_group", None), "is_first_rank",
                   True)


def _layer(model, m):
    return model.model.layers[int(m.group(1))]


def _expert(model, m, w, name):
    part = m.group(4)
    filled = _layer(model, m).mlp.load_expert(int(m.group(2)), m.group(3), w, name, part)
    # [] for an expert another expert-parallel rank owns: shape-checked, then left to it.
    return [(f"model.layers.{m.group(1)}.mlp.{p}", 1) for p in filled]


def _fused_experts(model, m, w, name):
    mlp = _layer(model, m).mlp
    which = "down_proj" if m.group(2) == "down_proj" else "gate_up_proj"
    target = "w2" if which == "down_proj" else "w13"
    n = mlp.load_fused(which, w, name)
    fills = [(f"model.layers.{m.group(1)}.mlp.{target}", n)]
    if mlp.quant is not None:  # bf16 in, quantized as it loads: the scales fill alongside
        fills.append((f"model.layers.{m.group(1)}.mlp.{target}_scale", n))
    return fills


def _shared(model, m, w, name):
    which, part = m.group(2), m.group(3)
    _layer(model, m).mlp.load_shared(which, w, name, part)
    target = "shared_down" if which == "down_proj" else "shared_gate_up"
    return [(f"model.layers.{m.group(1)}.mlp.{target}.{part}", 1)]


def _qkv(model, m, w, name):
    _layer(model, m).self_attn.load_qkv(m.group(2), w, name, m.group(3))
    return [(f"model.layers.{m.group(1)}.self_attn.qkv_proj.{m.group(3)}", 1)]


def _gdn_qkv(model, m, w, name):
    _layer(model, m).linear_attn.load_in_proj_qkv(w, name, m.group(2))
    return [(f"model.layers.{m.group(1)}.linear_attn.in_proj_qkv.{m.group(2)}", 1)]


def _gdn(method: str, param: str):
    def load(model, m, w, name):
        gdn = _layer(model, m).linear_attn
        if method == "per_head":
            gdn.load_per_head(getattr(gdn, param), w, name)
        else:
            getattr(gdn, method)(w, name)
        return [(f"model.layers.{m.group(1)}.linear_attn.{param}", 1)]

    return load


def _r(pattern: str, load) -> Rule:
    return Rule(re.compile(pattern), load)


RULES: tuple[Rule, ...] = (
    _r(LM + r"embed_tokens\.weight$", _embed),
    _r(r"^lm_head\.weight$", _param("lm_head.weight")),
    _r(LM + r"norm\.weight$", _param("model.norm.weight")),
    _r(LAYER + r"(input_layernorm|post_attention_layernorm)\.weight$",
       _param("model.layers.{0}.{1}.weight")),
    _r(LAYER + r"self_attn\.(q|k|v)_proj" + PART, _qkv),
    _r(LAYER + r"self_attn\.(o_proj)" + PART, _param("model.layers.{0}.self_attn.{1}.{2}")),
    _r(LAYER + r"self_attn\.(q_norm|k_norm)\.weight$",
       _param("model.layers.{0}.self_attn.{1}.weight")),
    _r(LAYER + r"linear_attn\.in_proj_qkv" + PART, _gdn_qkv),
    _r(LAYER + r"linear_attn\.conv1d\.weight$", _gdn("load_conv1d", "conv_weight")),
    _r(LAYER + r"linear_attn\.A_log$", _gdn("per_head", "A_log")),
    _r(LAYER + r"linear_attn\.dt_bias$", _gdn("per_head", "dt_bias")),
    _r(LAYER + r"linear_attn\.(in_proj_z|in_proj_b|in_proj_a|out_proj)" + PART,
       _param("model.layers.{0}.linear_attn.{1}.{2}")),
    _r(LAYER + r"linear_attn\.(norm)\.weight$", _param("model.layers.{0}.linear_attn.{1}.weight")),
    _r(LAYER + r"mlp\.(gate|shared_expert_gate)" + PART, _param("model.layers.{0}.mlp.{1}.{2}")),
    _r(LAYER + r"mlp\.shared_expert\.(gate_proj|up_proj|down_proj)" + PART, _shared),
    _r(LAYER + r"mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)" + PART, _expert),
    _r(LAYER + r"mlp\.experts\.(gate_up_proj|down_proj)$", _fused_experts),
    _r(r"^model\.visual\.(.+\.attn)\.qkv\.(weight|bias)$", _param("visual.{0}.qkv_proj.{1}")),
    _r(r"^model\.visual\.(.+)$", _param("visual.{0}")),
)
# Multi-token-prediction weights: the target model leaves them to the MTP draft model
# (`rio_sglang.models.qwen3_5_moe_mtp`, built when NEXTN speculative decoding is on).
SKIPPED = re.compile(r"^mtp\.")
# The MTP head's own tensors, then the RULES above: `mtp_name` hands them only its decoder layer
# (`mtp.layers.0.*`, under the language model's layer names) and the target's embedding and
# output head, which the head shares and loads too.
MTP_RULES: tuple[Rule, ...] = (
    _r(r"^mtp\.fc\.weight$", _param("fc.weight")),
    _r(r"^mtp\.(pre_fc_norm_embedding|pre_fc_norm_hidden)\.weight$", _param("{0}.weight")),
    _r(r"^mtp\.norm\.weight$", _param("model.norm.weight")),
    *RULES,
)
_MTP_SHARED = ("model.language_model.embed_tokens.weight", "lm_head.weight")


def mtp_name(name: str) -> str | None:
    """Checkpoint name -> the name MTP_RULES read; None for the target model's tensors."""
    if name.startswith("mtp.layers."):
        return "model.language_model.layers." + name[len("mtp.layers."):]
    if name.startswith("mtp.") or name in _MTP_SHARED:
        return name
    return None


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
    if re.match(LM + r"norm\.|^lm_head\.", name):
        return not text.pp_group.is_last_rank
    return False


def expected_fills(model) -> dict[str, int]:
    """How many loads complete each parameter (experts: one per local expert and projection)."""
    fills = {}
    first_stage = _first_stage(model)
    for name, p in model.named_parameters():
        if name.startswith("visual.") and not first_stage:
            continue  # loaded by the first stage only (see `elsewhere`)
        part = name.rsplit(".", 1)[-1]
        if part in ("w13", "w13_scale"):
            fills[name] = 2 * p.shape[0]  # [E_local, 2I, H] (scale: [E_local, ...])
        elif part in ("w2", "w2_scale"):
            fills[name] = p.shape[0]
        elif re.search(r"self_attn\.qkv_proj\.weight", name):
            fills[name] = 3  # q (with its gate), k, v (weight and FP8 scale alike)
        elif re.search(r"shared_gate_up\.weight", name):
            fills[name] = 2
        else:
            fills[name] = 1
    return fills


def _first(items: list, n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_checkpoint(model, weights: Iterable, rules: tuple[Rule, ...] = RULES,
                    rename: Callable[[str], str | None] | None = None,
                    label: str = "the model") -> int:
    """Load every (name, tensor); raise WeightLoadError listing all problems. Returns count.

    `rename` (the MTP draft's `mtp_name`) maps a checkpoint name to the name `rules` read, or
    to None for a tensor another model loads; errors always name the checkpoint's tensor."""
    model.rio_params = dict(model.named_parameters())  # what the rules' `_param` loads into
    filled: Counter = Counter()
    unexpected, wrong, skipped, n = [], [], [], 0
    for name, w in weights:
        key = name if rename is None else rename(name)
        if key is None:
            continue
        if rename is None and SKIPPED.match(name):
            skipped.append(name)
            continue
        if elsewhere(model, name):
            continue
        rule = next((r for r in rules if r.pattern.match(key)), None)
        if rule is not None:
            m = rule.pattern.match(key)
            try:
                for target, k in rule.load(model, m, w, name):
                    filled[target] += k
                n += 1
            except KeyError:
                unexpected.append(name)
            except (ValueError, AssertionError, RuntimeError, IndexError) as e:
                wrong.append(str(e) if name in str(e) else f"{name}: {e}")
        else:
            unexpected.append(name)
    need = expected_fills(model)
    missing = sorted(p for p, k in need.items() if filled[p] < k)
    over = sorted(p for p, k in filled.items() if p in need and k > need[p])
    problems = {"missing": missing, "unexpected": unexpected, "wrongly shaped": wrong,
                "loaded twice": over}
    if any(problems.values()):
        raise WeightLoadError(f"checkpoint does not match {label}; " + "; ".join(
            f"{len(v)} {k}: {_first(v)}" for k, v in problems.items() if v))
    if skipped:
        log.warning("%d mtp.* tensors left to the MTP draft model (loaded only with "
                    "--speculative-algorithm NEXTN)", len(skipped))
    return n

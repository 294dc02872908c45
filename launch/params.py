"""Every weight tensor of Rio from a config.json-shaped dict, and how SGLang 0.5.23 shards it.

Used by launch/memory.py and bench/. The tensors are the loader's table
(rio_sglang/tensor_table.py) read forwards: each row once per value of its fields (layers of its
kind, experts, vision blocks), sized by its `Size` over the config's dims. What one of `tp`
tensor-parallel ranks holds follows the row's split (read from SGLang's layers:
ColumnParallel/RowParallel/QKVParallel/FusedMoE/Vocab...):
  "column" / "row" / "experts"  divided over TP (FusedMoE's I, A_log/dt_bias by v-head)
  "rep"    every rank holds all of it (norms, the router, shared_expert_gate, row-parallel biases)
  "kv"     K/V projections: divided by KV head, one whole head per rank when heads < TP
  "vocab"  VocabParallelEmbedding/ParallelLMHead: rows padded to 64 (64 * TP if not divisible)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from rio_sglang.tensor_table import BF16, FP32, LM_HEAD, MTP_RULES, RULES, Row, dims, stage_of

__all__ = ["BF16", "FP32", "Weight", "full_attention_layers", "weights"]
# The groups of rows only some decoder layers hold (config `layer_types`).
LAYER_TYPE = {"attention": "full_attention", "gdn": "linear_attention"}


@dataclass(frozen=True)
class Weight:
    name: str  # the checkpoint key
    shape: tuple[int, ...]
    group: str = ""  # for a breakdown: embed, attention, gdn, moe, shared, norm, vision, mtp
    split: str = "column"
    stage: str | None = "layer"  # "first" (embed, vision), "last" (norm, lm_head, mtp), "layer"
    layer: int | None = None
    dtype_bytes: int = BF16
    heads: int = 1  # split "kv": KV heads in `rows`
    fp8: bool = False  # a linear SGLang's FP8 methods quantize (with a scale per output row)

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def rank_numel(self, tp: int) -> int:
        """Elements one of `tp` tensor-parallel ranks holds."""
        if self.split == "rep":
            return self.numel
        if self.split == "vocab":
            pad = 64 if -(-self.rows // 64) * 64 % tp == 0 else 64 * tp
            return -(-self.rows // pad) * pad // tp * self.cols
        if self.split == "kv":
            if self.heads < tp:  # replicated: tp must be a multiple of the head count
                _check(tp % self.heads == 0, f"{self.name}: TP {tp} vs {self.heads} KV heads")
                return self.numel // self.heads
            _check(self.heads % tp == 0, f"{self.name}: {self.heads} KV heads over TP {tp}")
            return self.numel // tp
        _check(self.numel % tp == 0, f"{self.name}: {self.shape} over TP {tp}")
        return self.numel // tp

    def rank_rows(self, tp: int) -> int:
        """Output rows one rank holds: all of a row-parallel or replicated tensor's."""
        return self.rows if self.split in ("row", "rep") else self.rank_numel(tp) // self.cols

    def rank_bytes(self, tp: int) -> int:
        return self.rank_numel(tp) * self.dtype_bytes


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"does not shard evenly: {what}")


def full_attention_layers(text: dict) -> list[int]:
    """Layers 3, 7, ...: from `layer_types` when the config lists them, else the interval."""
    if text.get("layer_types"):
        return [i for i, kind in enumerate(text["layer_types"]) if kind == "full_attention"]
    interval = text["full_attention_interval"]
    return [i for i in range(text["num_hidden_layers"]) if (i + 1) % interval == 0]


def weights(cfg: dict, mtp: bool = False, layout: str = "fused") -> list[Weight]:
    """Every tensor of a Qwen3.5-MoE checkpoint of `cfg` (`mtp`: with the MTP head, one
    full-attention layer on the last stage), the routed experts in `layout`: "fused" (two
    stacked tensors a layer) or "per-expert" (as released; the same bytes)."""
    t, v = cfg["text_config"], cfg.get("vision_config")
    if v and v.get("deepstack_visual_indexes"):
        raise ValueError("deepstack vision mergers are not modelled (Qwen3.5 has none)")
    attn = set(full_attention_layers(t))
    types = ["full_attention" if i in attn else "linear_attention"
             for i in range(t["num_hidden_layers"])]
    tied = t.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
    rows = [r for r in RULES if not (r is LM_HEAD and tied) and (v or r.group != "vision")]
    out = _read_forwards(rows, cfg, types, layout)
    if mtp:
        head = _read_forwards([r for r in MTP_RULES if r.source.startswith("mtp.")], cfg,
                              ["full_attention"] * t.get("mtp_num_hidden_layers", 1), layout)
        out += [replace(w, group="mtp", stage="last", layer=None) for w in head]
    return out


def _read_forwards(rows: list[Row], cfg: dict, types: list[str], layout: str) -> list[Weight]:
    """Each row's tensors in a bf16 checkpoint (weights, no FP8 scales); stage None for the MTP
    head's (`weights` places them)."""
    d, v = dims(cfg), cfg.get("vision_config") or {}
    out = []
    for row in rows:
        if row.layout not in (None, layout):
            continue
        on = LAYER_TYPE.get(row.group)
        given = {"layer": [i for i, kind in enumerate(types) if on in (None, kind)],
                 "expert": range(d["E"]), "block": range(v.get("depth", 0)),
                 "part": ("weight",), "scale": ()}
        names = row.fields
        values = [row.each[n] if n in row.each and not callable(row.each[n]) else given[n]
                  for n in names]
        for combo in itertools.product(*values):
            f = dict(zip(names, combo, strict=True))
            key, size = row.source.format(**f), row.size_of(f)
            stage = stage_of(key)
            layer = stage if isinstance(stage, int) else None
            out.append(Weight(key, size.of(d), row.group, size.split,
                              stage if layer is None else "layer", layer, size.dtype_bytes,
                              d["Hkv"] if size.split == "kv" else 1, row.fp8))
    return out

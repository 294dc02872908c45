"""Every weight tensor of Rio from a config.json-shaped dict, and how SGLang 0.5.23 shards it.

Used by launch/memory.py. One row per tensor kind; `split` says what one tensor-parallel rank
holds (read from SGLang's layers: ColumnParallel/RowParallel/QKVParallel/FusedMoE/Vocab...):
  "tp"     divided over TP (column or row parallel, FusedMoE's I, A_log/dt_bias by v-head)
  "rep"    every rank holds all of it (norms, the router, shared_expert_gate, row-parallel biases)
  "kv"     K/V projections: divided by KV head, one whole head per rank when heads < TP
  "vocab"  VocabParallelEmbedding/ParallelLMHead: rows padded to 64 (64 * TP if not divisible)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

BF16 = 2
FP32 = 4


@dataclass(frozen=True)
class Weight:
    name: str
    rows: int
    cols: int = 1
    group: str = ""  # for a breakdown: embed, attention, gdn, moe, shared, norm, vision, mtp
    split: str = "tp"
    stage: str = "layer"  # "first" (embed, vision), "last" (norm, lm_head, mtp) or "layer"
    layer: int | None = None
    dtype_bytes: int = BF16
    heads: int = 1  # split "kv": KV heads in `rows`

    @property
    def numel(self) -> int:
        return self.rows * self.cols

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
        _check(self.numel % tp == 0, f"{self.name}: {self.rows}x{self.cols} over TP {tp}")
        return self.numel // tp

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


def _attention(t: dict, layer: int | None, p: str, stage: str) -> list[Weight]:
    H, D = t["hidden_size"], t["head_dim"]
    Hq, Hkv = t["num_attention_heads"], t["num_key_value_heads"]
    gate = 2 if t.get("attn_output_gate", True) else 1  # q_proj holds [q | gate] per head
    kw = {"group": "attention", "layer": layer, "stage": stage}
    return [Weight(f"{p}.q_proj", gate * Hq * D, H, **kw),
            Weight(f"{p}.k_proj", Hkv * D, H, split="kv", heads=Hkv, **kw),
            Weight(f"{p}.v_proj", Hkv * D, H, split="kv", heads=Hkv, **kw),
            Weight(f"{p}.o_proj", H, Hq * D, **kw),
            Weight(f"{p}.q_norm", D, split="rep", **kw),
            Weight(f"{p}.k_norm", D, split="rep", **kw)]


def _gdn(t: dict, layer: int, p: str) -> list[Weight]:
    H, Hk, Hv = t["hidden_size"], t["linear_num_key_heads"], t["linear_num_value_heads"]
    Dk, Dv, K = t["linear_key_head_dim"], t["linear_value_head_dim"], t["linear_conv_kernel_dim"]
    conv_dim = 2 * Hk * Dk + Hv * Dv  # [q | k | v]
    kw = {"group": "gdn", "layer": layer}
    return [Weight(f"{p}.in_proj_qkv", conv_dim, H, **kw),
            Weight(f"{p}.in_proj_z", Hv * Dv, H, **kw),
            Weight(f"{p}.in_proj_b", Hv, H, **kw),
            Weight(f"{p}.in_proj_a", Hv, H, **kw),
            Weight(f"{p}.conv1d", conv_dim, K, **kw),
            Weight(f"{p}.dt_bias", Hv, **kw),
            Weight(f"{p}.A_log", Hv, dtype_bytes=FP32, **kw),  # SGLang keeps A_log in fp32
            Weight(f"{p}.norm", Dv, split="rep", **kw),
            Weight(f"{p}.out_proj", H, Hv * Dv, **kw)]


def _ffn(t: dict, layer: int | None, p: str, stage: str) -> list[Weight]:
    H, E, Ie, Is = (t["hidden_size"], t["num_experts"], t["moe_intermediate_size"],
                    t["shared_expert_intermediate_size"])
    kw = {"layer": layer, "stage": stage}
    return [Weight(f"{p}.input_layernorm", H, split="rep", group="norm", **kw),
            Weight(f"{p}.post_attention_layernorm", H, split="rep", group="norm", **kw),
            Weight(f"{p}.mlp.gate", E, H, split="rep", group="moe", **kw),
            Weight(f"{p}.mlp.experts.gate_up_proj", E * 2 * Ie, H, group="moe", **kw),
            Weight(f"{p}.mlp.experts.down_proj", E * H, Ie, group="moe", **kw),
            Weight(f"{p}.mlp.shared_expert.gate_up_proj", 2 * Is, H, group="shared", **kw),
            Weight(f"{p}.mlp.shared_expert.down_proj", H, Is, group="shared", **kw),
            Weight(f"{p}.mlp.shared_expert_gate", H, split="rep", group="shared", **kw)]


def _vision(v: dict) -> list[Weight]:
    if v.get("deepstack_visual_indexes"):
        raise ValueError("deepstack vision mergers are not modelled (Qwen3.5 has none)")
    C, I, out = v["hidden_size"], v["intermediate_size"], v["out_hidden_size"]
    M = C * v["spatial_merge_size"] ** 2  # the merger sees 2x2 patches concatenated
    patch = v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2
    kw = {"group": "vision", "stage": "first"}
    w = [Weight("visual.patch_embed.proj", C, patch, split="rep", **kw),
         Weight("visual.patch_embed.bias", C, split="rep", **kw),
         Weight("visual.pos_embed", v["num_position_embeddings"], C, split="vocab", **kw)]
    for b in range(v["depth"]):
        p = f"visual.blocks.{b}"
        w += [Weight(f"{p}.norms", 4 * C, split="rep", **kw),  # norm1, norm2: weight + bias
              Weight(f"{p}.attn.qkv", 3 * C, C + 1, **kw),  # + bias, column parallel
              Weight(f"{p}.attn.proj", C, C, **kw),
              Weight(f"{p}.attn.proj.bias", C, split="rep", **kw),
              Weight(f"{p}.mlp.linear_fc1", I, C + 1, **kw),
              Weight(f"{p}.mlp.linear_fc2", C, I, **kw),
              Weight(f"{p}.mlp.linear_fc2.bias", C, split="rep", **kw)]
    return w + [Weight("visual.merger.norm", 2 * C, split="rep", **kw),
                Weight("visual.merger.linear_fc1", M, M + 1, **kw),
                Weight("visual.merger.linear_fc2", out, M, **kw),
                Weight("visual.merger.linear_fc2.bias", out, split="rep", **kw)]


def _mtp(t: dict) -> list[Weight]:
    """The MTP head (speculative NEXTN draft): fc over [embedding | hidden], one attention+MoE
    layer, three norms; it shares embed_tokens and lm_head with the target."""
    H = t["hidden_size"]
    kw = {"group": "mtp", "stage": "last"}
    w = [Weight("mtp.fc", H, 2 * H, split="rep", **kw),  # a plain nn.Linear in SGLang
         Weight("mtp.norms", 3 * H, split="rep", **kw)]
    layer = _attention(t, None, "mtp.layers.0.self_attn", "last") + _ffn(t, None, "mtp.layers.0",
                                                                        "last")
    return w + [replace(x, group="mtp") for x in layer]


def weights(cfg: dict, mtp: bool = False) -> list[Weight]:
    """All weight tensors of a Qwen3.5-MoE config.json dict (`mtp`: with the MTP head)."""
    t, v = cfg["text_config"], cfg.get("vision_config")
    V, H = t["vocab_size"], t["hidden_size"]
    w = [Weight("embed_tokens", V, H, split="vocab", stage="first", group="embed")]
    attn = set(full_attention_layers(t))
    for i in range(t["num_hidden_layers"]):
        p = f"layers.{i}"
        w += (_attention(t, i, f"{p}.self_attn", "layer") if i in attn
              else _gdn(t, i, f"{p}.linear_attn"))
        w += _ffn(t, i, p, "layer")
    w.append(Weight("norm", H, split="rep", stage="last", group="norm"))
    if not t.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False)):
        w.append(Weight("lm_head", V, H, split="vocab", stage="last", group="embed"))
    if v:
        w += _vision(v)
    if mtp:
        w += _mtp(t)
    return w

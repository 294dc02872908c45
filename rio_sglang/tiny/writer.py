"""Write a complete tiny Qwen3.5-MoE checkpoint: config, sharded safetensors, tokenizer, processor.

Called by `rio-sglang tiny` (`python -m rio_sglang.tiny`), `rio-sglang serve --tiny` and the test
fixtures. Same preset and seed, same bytes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from . import fp8 as _fp8
from .presets import PRESETS, TinyPreset, build_config
from .tokenizer import special_ids, train_tokenizer

log = logging.getLogger(__name__)

EXPERT_LAYOUTS = ("per-expert", "fused")
_FUSED = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")
TENSORS_PER_SHARD = 48
# Bumped whenever the bytes a preset produces change: cached checkpoints are regenerated.
GENERATOR_VERSION = 5


def checkpoint_tensors(state: dict, layout: str) -> dict:
    """transformers' module state -> checkpoint key layout ("per-expert" or "fused").

    transformers keeps experts fused as `gate_up_proj [E, 2I, H]` (gate rows first) and
    `down_proj [E, H, I]`; per-expert checkpoints store `experts.{e}.{gate,up,down}_proj.weight`.
    """
    if layout not in EXPERT_LAYOUTS:
        raise ValueError(f"expert layout {layout!r} not in {EXPERT_LAYOUTS}")
    out = {}
    for name, t in state.items():
        m = _FUSED.match(name)
        if m is None or layout == "fused":
            out[name] = t
            continue
        prefix, which = m.groups()
        for e in range(t.shape[0]):
            if which == "gate_up_proj":
                gate, up = t[e].chunk(2, dim=0)  # [I, H] each
                out[f"{prefix}.{e}.gate_proj.weight"] = gate
                out[f"{prefix}.{e}.up_proj.weight"] = up
            else:
                out[f"{prefix}.{e}.down_proj.weight"] = t[e]  # [H, I]
    return out


def write_shards(tensors: dict, out: Path) -> None:
    from safetensors.torch import save_file

    names = sorted(tensors)
    chunks = [names[i : i + TENSORS_PER_SHARD] for i in range(0, len(names), TENSORS_PER_SHARD)]
    weight_map, total = {}, 0
    for i, chunk in enumerate(chunks):
        fname = f"model-{i + 1:05d}-of-{len(chunks):05d}.safetensors"
        part = {n: tensors[n].contiguous() for n in chunk}
        save_file(part, str(out / fname), metadata={"format": "pt"})
        for n in chunk:
            weight_map[n] = fname
            total += part[n].numel() * part[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _write_processor(tokenizer, out: Path) -> None:
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    # Small pixel bounds keep an image to a handful of tokens on the CPU.
    pixels = {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
    image = Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, size=pixels)
    video = Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, size=pixels)
    proc = Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=tokenizer.chat_template)
    proc.save_pretrained(str(out))


def mtp_tensors(text_config, init_std: float) -> dict:
    """A random multi-token-prediction head under the released checkpoints' `mtp.*` names: fc
    [H, 2H] over [embedding | hidden], its two input norms, one full-attention MoE decoder layer
    (transformers' own layer class, for the names and shapes) and a final norm. Qwen3.5's norms
    scale by (1 + w): 1-D tensors start at zero, matrices at N(0, init_std)."""
    import torch
    from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import Qwen3_5MoeDecoderLayer

    attn_layer = text_config.layer_types.index("full_attention")
    layer = Qwen3_5MoeDecoderLayer(text_config, layer_idx=attn_layer)
    h = text_config.hidden_size
    shapes = {f"mtp.layers.0.{k}": v.shape for k, v in layer.state_dict().items()}
    shapes["mtp.fc.weight"] = (h, 2 * h)
    shapes.update({f"mtp.{n}.weight": (h,) for n in
                   ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm")})
    return {k: torch.zeros(s) if len(s) == 1 else torch.randn(s) * init_std
            for k, s in shapes.items()}


def write_tiny_checkpoint(out_dir, preset: str | TinyPreset = "tiny", seed: int = 0,
                          expert_layout: str = "per-expert", dtype: str = "bfloat16",
                          mtp: bool = False, fp8: str | None = None,
                          fp8_linears: bool = False) -> Path:
    """Generate a randomly initialised checkpoint of the real architecture into `out_dir`;
    `mtp=True` adds a random MTP head (`mtp.*`, for NEXTN speculative decoding); `fp8`
    "block" / "channel" writes the FP8 variant (tiny/fp8.py: experts, and with `fp8_linears`
    the other projections) from the same bf16 weights."""
    import torch
    from transformers import Qwen3_5MoeForConditionalGeneration

    p = PRESETS[preset] if isinstance(preset, str) else preset
    if p.config_only:
        raise ValueError(f"preset {p.name} is config-only (real widths): write it with "
                         "write_config_only and serve it with --load-format dummy")
    if fp8 is not None and expert_layout != "per-expert":
        raise ValueError("FP8 checkpoints keep per-expert tensors (as released): "
                         "--expert-layout per-expert")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(p.vocab)
    ids = special_ids(tokenizer)
    config = build_config(p, ids)
    torch.manual_seed(seed)
    # Built in fp32 and converted: a dtype inside text_config breaks transformers' forward.
    model = Qwen3_5MoeForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, p.head_std)
        # Special tokens keep the narrow init: a random model then rarely ends a turn (or
        # opens a vision block) on its own, and answers run to max_tokens as tests expect.
        special = torch.tensor(sorted(ids.values()))
        model.lm_head.weight[special] *= p.init_std / p.head_std
        state = dict(model.state_dict())
        if mtp:
            state.update(mtp_tensors(config.text_config, p.init_std))
    state = {k: v.to(getattr(torch, dtype)) for k, v in state.items()}
    tensors = checkpoint_tensors(state, expert_layout)
    made_by = {"preset": p.name, "seed": seed, "expert_layout": expert_layout,
               "generator": GENERATOR_VERSION}
    quant = None
    if fp8 is not None:
        tensors = _fp8.quantize_tensors(tensors, fp8, p.fp8_block, fp8_linears)
        quant = _fp8.quantization_config(fp8, p.fp8_block, fp8_linears)
        made_by["fp8"] = fp8 + (" (linears too)" if fp8_linears else " (experts)")
    write_shards(tensors, out)
    if mtp:
        made_by["mtp"] = True
    _write_metadata(out, config, tokenizer, ids, dtype, made_by, quant)
    log.info("wrote %s checkpoint (seed %d, %d experts, %s layout) to %s",
             p.name, seed, p.experts, expert_layout, out)
    return out


def cached_tiny_checkpoint(preset: str = "tiny", seed: int = 0) -> Path:
    """The tiny checkpoint for (preset, seed) under RIO_CACHE_DIR, generated on first use and
    again whenever GENERATOR_VERSION moves (`rio-sglang serve --tiny`, the cpu-tiny target)."""
    from rio_sglang import env

    path = env.cache_dir() / "checkpoints" / f"{preset}-seed{seed}"
    config = path / "config.json"
    made_by = json.loads(config.read_text()).get("rio_tiny", {}) if config.exists() else {}
    if made_by.get("generator") != GENERATOR_VERSION:
        log.info("generating %s checkpoint (seed %d) in %s", preset, seed, path)
        write_tiny_checkpoint(path, preset, seed)
    return path


def write_config_only(out_dir, preset: str | TinyPreset, dtype: str = "bfloat16") -> Path:
    """config.json, tokenizer and processor of `preset`, no weights: serve with
    `--load-format dummy` (SGLang's random initialisation). Any preset; the rio-slice ones
    (real widths) can only be written this way."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(p.vocab)
    ids = special_ids(tokenizer)
    quant = None if p.fp8 is None else _fp8.quantization_config(p.fp8, p.fp8_block, True)
    _write_metadata(out, build_config(p, ids), tokenizer, ids, dtype, {
        "preset": p.name, "weights": "none (--load-format dummy)", "generator": GENERATOR_VERSION},
        quant)
    log.info("wrote %s config, tokenizer and processor (no weights) to %s", p.name, out)
    return out


def _write_metadata(out: Path, config, tokenizer, ids: dict, dtype: str, made_by: dict,
                    quant: dict | None = None) -> None:
    cfg = config.to_dict()
    cfg["dtype"] = dtype
    if quant is not None:
        cfg["quantization_config"] = quant
    # SGLang derives layer types from this key (transformers consumes it and drops it).
    cfg["text_config"]["full_attention_interval"] = 4
    if made_by.get("mtp"):
        cfg["text_config"]["mtp_num_hidden_layers"] = 1  # as Qwen3.5's released configs say
    write_text_files(out, cfg, tokenizer, ids, made_by)
    _write_processor(tokenizer, out)


def write_text_files(out: Path, cfg: dict, tokenizer, ids: dict, made_by: dict) -> None:
    """config.json (`made_by` under "rio_tiny"), generation_config.json (a turn ends on
    `<|im_end|>`) and the tokenizer files: what every tiny checkpoint has beside its weights."""
    from transformers import GenerationConfig

    cfg = {**cfg, "rio_tiny": made_by}
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    gen.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

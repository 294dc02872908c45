"""Tiny checkpoint presets: the real Qwen3.5-MoE architecture at toy widths.

Each preset is a frozen description turned into transformers' own `Qwen3_5MoeConfig` by
`build_config`; token ids of the special tokens come from the tokenizer, never from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinyPreset:
    name: str
    layers: int = 4  # full_attention_interval 4: 3 Gated DeltaNet + 1 full attention
    hidden: int = 64
    experts: int = 8
    topk: int = 2
    expert_inter: int = 32
    shared_inter: int = 32
    vocab: int = 512
    attn_heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32  # rotary dim 8 (factor 0.25): mrope sections sum to 4
    mrope_section: tuple[int, int, int] = (2, 1, 1)
    lin_k_heads: int = 2
    lin_v_heads: int = 4
    lin_head_dim: int = 16
    vision_depth: int = 1
    vision_hidden: int = 32
    init_std: float = 0.02
    # The output head alone is drawn wider, so that logits are peaked and entropy moves step to
    # step (SwiReasoning switches on entropy trends; near-uniform logits would leave every
    # decision to fp16 noise) while activations stay small enough for fp16 parity.
    head_std: float = 1.0
    # Real-width slices are written without weights (config, tokenizer, processor) and served
    # with SGLang's `--load-format dummy`: rio-slice-4 alone would be ~56 GB of bf16 weights.
    config_only: bool = False
    # FP8 (`python -m rio_sglang.tiny --fp8 block|channel`): block scales per fp8_block, which
    # must tile the expert I (and I / TP under tensor parallelism): Qwen's 128 x 128 at real
    # widths, 16 x 16 at tiny ones. `fp8` set: a config-only FP8 twin (Qwen's block layout).
    fp8_block: tuple[int, int] = (16, 16)
    fp8: str | None = None


PRESETS: dict[str, TinyPreset] = {
    p.name: p
    for p in (
        TinyPreset("tiny"),
        TinyPreset("tiny-deep", layers=8),
        # The real routing shape (512 experts, top-10) at a hidden size the CPU can carry.
        TinyPreset("tiny-wide", hidden=32, experts=512, topk=10, expert_inter=16, shared_inter=16,
                   attn_heads=2, kv_heads=1, lin_k_heads=1, lin_v_heads=2),
        # Rio's real widths with few layers, for bench/serve_bench.py on one GPU: 4 layers
        # (3 Gated DeltaNet + 1 full attention) fit an H100 in bf16, 8 layers an H200.
        # `-fp8`: their FP8 twins in Qwen's block layout (every linear but the router, gates
        # and output head in e4m3, 128 x 128 scales), for benchmarks beside bf16.
        *(TinyPreset(f"rio-slice-{n}{suffix}", layers=n, hidden=4096, experts=512, topk=10,
                     expert_inter=1024, shared_inter=1024, vocab=248_320, attn_heads=32,
                     kv_heads=2, head_dim=256, mrope_section=(11, 11, 10), lin_k_heads=16,
                     lin_v_heads=64, lin_head_dim=128, init_std=0.02, config_only=True,
                     fp8_block=(128, 128), fp8=fp8_kind)
          for n in (4, 8) for suffix, fp8_kind in (("", None), ("-fp8", "block"))),
    )
}


def build_config(preset: TinyPreset, special_ids: dict[str, int]):
    """Return transformers' `Qwen3_5MoeConfig` for `preset`, wired to the tokenizer's ids."""
    from transformers import Qwen3_5MoeConfig

    text = {
        "vocab_size": preset.vocab,
        "hidden_size": preset.hidden,
        "num_hidden_layers": preset.layers,
        "full_attention_interval": 4,
        "num_attention_heads": preset.attn_heads,
        "num_key_value_heads": preset.kv_heads,
        "head_dim": preset.head_dim,
        "linear_num_key_heads": preset.lin_k_heads,
        "linear_num_value_heads": preset.lin_v_heads,
        "linear_key_head_dim": preset.lin_head_dim,
        "linear_value_head_dim": preset.lin_head_dim,
        "linear_conv_kernel_dim": 4,
        "num_experts": preset.experts,
        "num_experts_per_tok": preset.topk,
        "moe_intermediate_size": preset.expert_inter,
        "shared_expert_intermediate_size": preset.shared_inter,
        "max_position_embeddings": 4096,
        "initializer_range": preset.init_std,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10_000_000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": list(preset.mrope_section),
            "mrope_interleaved": True,
        },
        "eos_token_id": special_ids["<|im_end|>"],
        "pad_token_id": special_ids["<|endoftext|>"],
    }
    vision = {
        "depth": preset.vision_depth,
        "hidden_size": preset.vision_hidden,
        "intermediate_size": 2 * preset.vision_hidden,
        "num_heads": 2,
        "patch_size": 16,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "out_hidden_size": preset.hidden,
        "num_position_embeddings": 64,
        # As released Qwen3.5 configs say: no deepstack mergers (SGLang defaults to three).
        "deepstack_visual_indexes": [],
        "initializer_range": preset.init_std,
    }
    return Qwen3_5MoeConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=special_ids["<|image_pad|>"],
        video_token_id=special_ids["<|video_pad|>"],
        vision_start_token_id=special_ids["<|vision_start|>"],
        vision_end_token_id=special_ids["<|vision_end|>"],
        tie_word_embeddings=False,
        architectures=["Qwen3_5MoeForConditionalGeneration"],
    )

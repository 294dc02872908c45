"""Tiny random checkpoints of the SwiReasoning paper's model families, in transformers' own classes.

SGLang serves each with its stock class of the same name (no external model package). Called by
`python -m rio_sglang.tiny OUT --family NAME` and by the tests' `family_ckpt` fixture. Same
family, seed and think tags, same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .tokenizer import THINK_TAGS, special_ids, special_tokens, train_tokenizer
from .writer import checkpoint_tensors, write_shards, write_text_files

log = logging.getLogger(__name__)

# Bumped whenever the bytes a family produces change.
FAMILY_GENERATOR_VERSION = 1
VOCAB = 512
INIT_STD = 0.02
# The output head is drawn wider, as the Rio tiny's (presets.py: head_std): peaked logits whose
# entropy moves step to step, greedy decisions with margins, activations small for fp16.
HEAD_STD = 1.0
# Tied families only (see _draw_head): the MLPs' output projections and the special tokens'
# rows of the shared embedding.
TIED_DOWN_STD = 5.0
TIED_SPECIAL_SCALE = 0.25


@dataclass(frozen=True)
class Family:
    """One paper family at toy width: `architecture` is both transformers' class and SGLang's
    stock class that serves it; `config` adds to the shared tiny shape (`_config`)."""

    name: str
    architecture: str
    model_type: str
    tied: bool = False
    config: dict = field(default_factory=dict)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    # Qwen3 dense as released at 0.6B-4B (tied) and at 8B-32B (untied).
    Family("qwen3", "Qwen3ForCausalLM", "qwen3", tied=True),
    Family("qwen3-untied", "Qwen3ForCausalLM", "qwen3"),
    Family("qwen3-moe", "Qwen3MoeForCausalLM", "qwen3_moe", config={
        "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "decoder_sparse_step": 1, "norm_topk_prob": True}),
    # DeepSeek-R1-Distill-Llama: Llama 3.1 with its llama3 rope scaling.
    Family("llama", "LlamaForCausalLM", "llama", config={"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131_072}),
    # DeepSeek-R1-Distill-Qwen: Qwen2 (q/k/v biases), untied as the distills are.
    Family("qwen2", "Qwen2ForCausalLM", "qwen2"),
)}


def _config(fam: Family, ids: dict[str, int]):
    """transformers' config of `fam` at toy width, wired to the tokenizer's ids."""
    from transformers import AutoConfig

    shape = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "head_dim": 16, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
             "initializer_range": INIT_STD, "tie_word_embeddings": fam.tied,
             "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
             "architectures": [fam.architecture]}
    return AutoConfig.for_model(fam.model_type, **{**shape, **fam.config})


def _draw_head(model, fam: Family, ids: dict[str, int]) -> None:
    """Untied: the output head drawn at HEAD_STD, its special tokens' rows narrow (as the Rio
    tiny: a random model then rarely ends a turn or closes its thinking on its own).

    Tied, the head is the input embedding (kept at INIT_STD) and the final norm's weight brings
    the logits to the same scale. The last hidden
    state must then not be dominated by the token's own embedding (the model repeats its input)
    nor by attention's context average (it settles on one token): the MLP output projections
    are drawn at TIED_DOWN_STD, so that each position's hidden state is a random function of
    its token. Special rows shrink less than untied: they are input embeddings too (`</think>`
    is blended into latent inputs by SwiReasoning).
    """
    import torch

    special = torch.tensor(sorted(ids.values()))
    head = model.get_output_embeddings().weight  # [V, H]
    if fam.tied:
        model.model.norm.weight.fill_(HEAD_STD / INIT_STD)
        head[special] *= TIED_SPECIAL_SCALE
        for name, p in model.named_parameters():
            if name.endswith("mlp.down_proj.weight"):
                p.normal_(0.0, TIED_DOWN_STD)
    else:
        head.normal_(0.0, HEAD_STD)
        head[special] *= INIT_STD / HEAD_STD
    for name, p in model.named_parameters():
        if name.endswith(".bias"):  # transformers starts them at zero: draw them, to be loaded
            p.normal_(0.0, INIT_STD)


def write_family_checkpoint(out_dir, family: str, seed: int = 0, think_tags: bool = True,
                            dtype: str = "bfloat16") -> Path:
    """Write `family`'s tiny random checkpoint into `out_dir`: config.json, per-expert
    safetensors (as released), the Qwen tokenizer with released Qwen's pre-tokenization and the
    thinking chat template (tokenizer.py; `think_tags=False`: no `<think>` / `</think>`
    tokens), generation config.
    bf16 as the released checkpoints (and the Rio tiny): servers and references load it in fp16.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"family {family!r} not in {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(VOCAB, think_tags, qwen_split=True)
    ids = special_ids(tokenizer, special_tokens(think_tags))
    config = _config(fam, ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        _draw_head(model, fam, ids)
    state = model.state_dict()
    if fam.tied:  # one tensor, as transformers saves tied weights
        state.pop("lm_head.weight")
    tensors = checkpoint_tensors({k: v.to(getattr(torch, dtype)) for k, v in state.items()},
                                 "per-expert")
    write_shards(tensors, out)
    cfg = {**config.to_dict(), "dtype": dtype}
    made_by = {"family": family, "seed": seed, "think_tags": think_tags,
               "generator": FAMILY_GENERATOR_VERSION}
    write_text_files(out, cfg, tokenizer, ids, made_by)
    log.info("wrote %s checkpoint (seed %d%s) to %s", family, seed,
             "" if think_tags else f", no {'/'.join(THINK_TAGS)}", out)
    return out

"""The tiny checkpoint generator: real key layout, both expert layouts, determinism, loadability."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rio_sglang.checkpoint import verify_checkpoint
from rio_sglang.tiny import PRESETS, write_tiny_checkpoint
from rio_sglang.tiny.tokenizer import SPECIAL_TOKENS
from rio_sglang.tiny.writer import GENERATOR_VERSION

PATTERNS = Path(__file__).parent / "fixtures" / "rio_key_patterns.txt"
FUSED = ("model.language_model.layers.{L}.mlp.experts.gate_up_proj",
         "model.language_model.layers.{L}.mlp.experts.down_proj")


def key_regexes(layout: str) -> dict[str, re.Pattern]:
    lines = [ln for ln in PATTERNS.read_text().splitlines() if ln and not ln.startswith("#")]
    if layout == "fused":
        lines = [ln for ln in lines if ".experts.{E}." not in ln] + list(FUSED)
    esc = {p: re.escape(p).replace(r"\{L\}", r"\d+").replace(r"\{E\}", r"\d+")
           .replace(r"\{B\}", r"\d+") for p in lines}
    return {p: re.compile(f"^{r}$") for p, r in esc.items()}


def weight_names(ckpt: Path) -> list[str]:
    return list(json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"])


def digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


# preset, layout, full-attention layers, experts, topk
CASES = [
    ("tiny", "per-expert", 1, 8, 2),
    ("tiny", "fused", 1, 8, 2),
    ("tiny-deep", "per-expert", 2, 8, 2),
    ("tiny-wide", "per-expert", 1, 512, 10),
]


@pytest.mark.parametrize("preset,layout,n_full,experts,topk", CASES)
def test_checkpoint_layout(tmp_path, preset, layout, n_full, experts, topk):
    ckpt = write_tiny_checkpoint(tmp_path / preset, preset, seed=1, expert_layout=layout)
    cfg = json.loads((ckpt / "config.json").read_text())
    text = cfg["text_config"]
    assert cfg["architectures"] == ["Qwen3_5MoeForConditionalGeneration"]
    assert (cfg["model_type"], text["model_type"]) == ("qwen3_5_moe", "qwen3_5_moe_text")
    assert text["layer_types"].count("full_attention") == n_full
    assert text["full_attention_interval"] == 4
    assert (text["num_experts"], text["num_experts_per_tok"]) == (experts, topk)

    names = weight_names(ckpt)
    regexes = key_regexes(layout)
    unmatched = [n for n in names if not any(r.match(n) for r in regexes.values())]
    unused = [p for p, r in regexes.items() if not any(r.match(n) for n in names)]
    assert unmatched == [] and unused == []
    if layout == "per-expert":
        assert sum(".mlp.experts." in n for n in names) == 3 * experts * PRESETS[preset].layers
    info = verify_checkpoint(ckpt)
    assert info.shards > 1 and info.tensors == len(names)


def test_special_tokens_agree_with_config(tmp_path):
    from transformers import AutoProcessor, AutoTokenizer

    ckpt = write_tiny_checkpoint(tmp_path / "t", "tiny", seed=0)
    tok = AutoTokenizer.from_pretrained(ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS) and len(tok) == PRESETS["tiny"].vocab
    assert cfg["image_token_id"] == ids["<|image_pad|>"]
    assert cfg["vision_start_token_id"] == ids["<|vision_start|>"]
    assert cfg["text_config"]["eos_token_id"] == ids["<|im_end|>"]
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    no_think = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                       add_generation_prompt=True, enable_thinking=False)
    assert no_think.endswith("<think>\n\n</think>\n\n")
    assert type(AutoProcessor.from_pretrained(ckpt)).__name__ == "Qwen3VLProcessor"


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    a = digest(write_tiny_checkpoint(tmp_path / "a", "tiny", seed=3))
    b = digest(write_tiny_checkpoint(tmp_path / "b", "tiny", seed=3))
    c = digest(write_tiny_checkpoint(tmp_path / "c", "tiny", seed=4))
    assert a == b
    shards = [n for n in a if n.endswith(".safetensors")]
    assert any(a[n] != c[n] for n in shards)


def test_both_layouts_load_the_same_model_in_transformers(tmp_path):
    from transformers import Qwen3_5MoeForConditionalGeneration

    models = []
    for layout in ("per-expert", "fused"):
        ckpt = write_tiny_checkpoint(tmp_path / layout, "tiny", seed=2, expert_layout=layout)
        model, info = Qwen3_5MoeForConditionalGeneration.from_pretrained(
            ckpt, dtype=torch.float32, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        models.append(model.state_dict())
    assert models[0].keys() == models[1].keys()
    for k in models[0]:
        torch.testing.assert_close(models[0][k], models[1][k], rtol=0, atol=0)


def test_cli_writes_a_checkpoint(tmp_path):
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "rio_sglang.tiny", str(out), "--preset", "tiny",
                    "--seed", "5"], check=True, capture_output=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rio_tiny"] == {"preset": "tiny", "seed": 5, "expert_layout": "per-expert",
                               "generator": GENERATOR_VERSION}
    bad = subprocess.run([sys.executable, "-m", "rio_sglang.tiny", str(out), "--preset", "huge"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice: 'huge'" in bad.stderr

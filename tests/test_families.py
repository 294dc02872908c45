"""The paper families' tiny checkpoints (rio_sglang/tiny/families.py): transformers loads each in
its own class, the think tags are single tokens (absent on request), same seed same bytes."""

from __future__ import annotations

import json

import pytest
import torch
from test_tiny import digest, weight_names

from rio_sglang.tiny import FAMILIES, write_family_checkpoint
from rio_sglang.tiny.__main__ import main as cli
from rio_sglang.tiny.families import VOCAB
from rio_sglang.tiny.tokenizer import THINK_TAGS

# family, architecture (transformers' and SGLang's class), tied head, routed experts per layer
CASES = [
    ("qwen3", "Qwen3ForCausalLM", True, 0),
    ("qwen3-untied", "Qwen3ForCausalLM", False, 0),
    ("qwen3-moe", "Qwen3MoeForCausalLM", False, 8),
    ("llama", "LlamaForCausalLM", False, 0),
    ("qwen2", "Qwen2ForCausalLM", False, 0),
]


def test_cases_cover_every_family():
    assert sorted(c[0] for c in CASES) == sorted(FAMILIES)


@pytest.mark.parametrize("family,arch,tied,experts", CASES)
def test_transformers_loads_its_own_class(family_ckpt, family, arch, tied, experts):
    from transformers import AutoModelForCausalLM

    ckpt = family_ckpt(family)
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == [arch] and cfg["tie_word_embeddings"] is tied
    assert cfg["rio_tiny"]["family"] == family and cfg["vocab_size"] == VOCAB
    model, info = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32,
                                                       output_loading_info=True)
    assert type(model).__name__ == arch
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    names = weight_names(ckpt)
    assert ("lm_head.weight" in names) is not tied  # tied: one tensor, as transformers saves
    assert (model.lm_head.weight is model.model.embed_tokens.weight) is tied
    # Released Qwen3-MoE checkpoints keep one tensor per expert and projection.
    assert sum(".mlp.experts." in n for n in names) == 3 * experts * 2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_think_tags_are_single_tokens(family_ckpt, family):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(family_ckpt(family))
    assert len(tok) == VOCAB
    for tag in THINK_TAGS:
        assert tok.encode(tag, add_special_tokens=False) == [tok.convert_tokens_to_ids(tag)]
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_transformers_tokenizes_as_tokenizer_json(family_ckpt, family):
    """transformers forces its Qwen2Tokenizer (and that class's own pre-tokenizer) on
    model_type qwen2; SGLang keeps tokenizer.json's where the two differ in type: both must
    split text the same way, or the server's chat prompts are not the reference's."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ckpt = family_ckpt(family)
    raw = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    tok = AutoTokenizer.from_pretrained(ckpt)
    for text in ("What is 12 + 30?", "x^2 - 3x = 0;\n\\frac{1}{2}  Rio's  café\n\n"):
        assert tok.encode(text, add_special_tokens=False) == raw.encode(text).ids


def test_no_think_tags_vocabulary(family_ckpt):
    from transformers import AutoTokenizer

    ckpt = family_ckpt("qwen3", think_tags=False)
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert len(tok) == VOCAB
    vocab = tok.get_vocab()
    for tag in THINK_TAGS:
        assert tag not in vocab and len(tok.encode(tag, add_special_tokens=False)) > 1
    assert "<|im_end|>" in vocab
    assert json.loads((ckpt / "config.json").read_text())["rio_tiny"]["think_tags"] is False


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_bytes(tmp_path, family):
    a = digest(write_family_checkpoint(tmp_path / "a", family, seed=3))
    b = digest(write_family_checkpoint(tmp_path / "b", family, seed=3))
    c = digest(write_family_checkpoint(tmp_path / "c", family, seed=4))
    assert a == b
    shards = [n for n in a if n.endswith(".safetensors")]
    assert shards and all(a[n] != c[n] for n in shards)


def test_cli_writes_a_family(tmp_path, capsys):
    out = tmp_path / "cli"
    cli(["--family", "qwen3-moe", "--seed", "2", "--no-think-tags", str(out)])
    made_by = json.loads((out / "config.json").read_text())["rio_tiny"]
    assert (made_by["family"], made_by["seed"], made_by["think_tags"]) == ("qwen3-moe", 2, False)
    with pytest.raises(SystemExit):
        cli([str(tmp_path / "x"), "--no-think-tags"])
    assert "--no-think-tags goes with --family" in capsys.readouterr().err

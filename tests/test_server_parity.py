"""The real SGLang server on a tiny checkpoint answers greedy requests exactly as transformers."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.server

NEW_TOKENS = 10


@pytest.fixture(scope="module")
def hf(tiny_ckpt):
    from transformers import AutoTokenizer, Qwen3_5MoeForConditionalGeneration

    model = Qwen3_5MoeForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.float16)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_ckpt)


def hf_greedy(model, ids: list[int], n: int = NEW_TOKENS) -> list[int]:
    x = torch.tensor([ids])
    out = model.generate(x, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, x.shape[1]:].tolist()


def chat_ids(tok, text: str) -> list[int]:
    # transformers 5 returns a BatchEncoding here, not a list.
    enc = tok.apply_chat_template([{"role": "user", "content": text}],
                                  add_generation_prompt=True, tokenize=True)
    return list(enc["input_ids"])


def test_generate_matches_transformers(hf, post):
    model, tok = hf
    ids = chat_ids(tok, "What is 12 + 30?")
    want = hf_greedy(model, ids)
    got = post("/generate", {"input_ids": ids, "sampling_params": {
        "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "temperature": 0}})
    assert got["output_ids"] == want
    assert len(want) == NEW_TOKENS


def test_chat_completion_matches_transformers(hf, post, server):
    model, tok = hf
    text = "Hello, how are you?"
    want = hf_greedy(model, chat_ids(tok, text))
    got = post("/v1/chat/completions", {
        "model": "default", "messages": [{"role": "user", "content": text}],
        "max_tokens": NEW_TOKENS, "min_tokens": NEW_TOKENS, "temperature": 0,
        "return_output_ids_in_sglext": True, "separate_reasoning": False})
    assert got["usage"]["completion_tokens"] == NEW_TOKENS
    assert got["sglext"]["output_ids"] == [want]  # one list per choice

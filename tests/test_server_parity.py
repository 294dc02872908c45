"""The real SGLang server on a tiny checkpoint answers greedy requests exactly as transformers."""

from __future__ import annotations

import pytest
from hf_reference import chat_ids, hf_greedy

pytestmark = pytest.mark.server

NEW_TOKENS = 10


@pytest.fixture(scope="module")
def tok(tiny_ckpt):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_ckpt)


def test_generate_matches_transformers(tiny_ckpt, tok, post):
    ids = chat_ids(tok, "What is 12 + 30?")
    want = hf_greedy(tiny_ckpt, ids, NEW_TOKENS)
    got = post("/generate", {"input_ids": ids, "sampling_params": {
        "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "temperature": 0}})
    assert got["output_ids"] == want
    assert len(want) == NEW_TOKENS


def test_chat_completion_matches_transformers(tiny_ckpt, tok, post, server):
    text = "Hello, how are you?"
    want = hf_greedy(tiny_ckpt, chat_ids(tok, text), NEW_TOKENS)
    got = post("/v1/chat/completions", {
        "model": "default", "messages": [{"role": "user", "content": text}],
        "max_tokens": NEW_TOKENS, "min_tokens": NEW_TOKENS, "temperature": 0,
        "return_output_ids_in_sglext": True, "separate_reasoning": False})
    assert got["usage"]["completion_tokens"] == NEW_TOKENS
    assert got["sglext"]["output_ids"] == [want]  # one list per choice

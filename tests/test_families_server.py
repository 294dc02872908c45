"""SGLang's stock class of each paper family (no external model package) on the CPU platform
answers greedy requests exactly as transformers: the base of the families' reasoning tests.

One server per family, started while the previous family's tests run (one_ahead.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hf_reference import chat_ids, hf_greedy
from one_ahead import OneAhead

from rio_sglang.launcher import launch
from rio_sglang.logmarks import PLUGIN_MARK, SERVING_MARK
from rio_sglang.tiny import FAMILIES

pytestmark = pytest.mark.server
NEW = 16
FAMILY_NAMES = sorted(FAMILIES)
# Chat prompts (thinking on) whose 16 greedy tokens keep a top-2 logit gap of at least 0.109
# (3.5 MIN_MARGIN) on every family at seed 0; hf_greedy checks MIN_MARGIN. test_server_parity's
# prompts tie: "What is 12 + 30?" on qwen3 and "Hello, how are you?" on qwen3-moe (gap 0).
PROMPTS = ("What is the capital of Brazil?", "Describe the image.")


@pytest.fixture(scope="module")
def family_starts(request, family_ckpt, tmp_path_factory):
    def start(key):
        name = FAMILY_NAMES[key]
        ckpt = family_ckpt(name)
        log = tmp_path_factory.mktemp("logs") / f"{name}.log"
        return launch(ckpt, log_path=log, stock=True), ckpt

    starts = OneAhead(request, start, "family_server")
    yield starts
    starts.stop()


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family_server(request, family_starts):
    """(family, checkpoint, server) for each family in turn."""
    with family_starts.serving(request.param_index) as (srv, ckpt):
        yield request.param, ckpt, srv


@pytest.fixture(scope="module")
def tok(family_server):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(family_server[1])


def generate(srv, ids: list[int]) -> list[int]:
    body = {"input_ids": ids, "sampling_params": {
        "max_new_tokens": NEW, "min_new_tokens": NEW, "temperature": 0}}
    r = requests.post(srv.url + "/generate", json=body, timeout=600)
    assert r.status_code == 200, r.text[:500]
    return r.json()["output_ids"]


def test_stock_class_serves(family_server):
    family, _, srv = family_server
    log = srv.log_path.read_text(errors="replace")
    # SGLang's loader names the class it built; our plugin says it stays idle.
    assert f"type={FAMILIES[family].architecture}," in log
    assert f"{PLUGIN_MARK}: idle" in log and SERVING_MARK not in log


@pytest.mark.parametrize("text", PROMPTS)
def test_greedy_tokens_equal_transformers(family_server, tok, text):
    _, ckpt, srv = family_server
    ids = chat_ids(tok, text)
    assert generate(srv, ids) == hf_greedy(ckpt, ids, NEW)


def test_batch_and_chat_api_equal_transformers(family_server, tok):
    """Both prompts at once (one decode batch), and one through the OpenAI chat API (SGLang
    applies the checkpoint's chat template)."""
    _, ckpt, srv = family_server
    prompts = [chat_ids(tok, text) for text in PROMPTS]
    with ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(lambda ids: generate(srv, ids), prompts))
    want = [hf_greedy(ckpt, ids, NEW) for ids in prompts]
    assert got == want
    r = requests.post(srv.url + "/v1/chat/completions", timeout=600, json={
        "model": "default", "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": NEW, "min_tokens": NEW, "temperature": 0,
        "return_output_ids_in_sglext": True, "separate_reasoning": False})
    assert r.status_code == 200, r.text[:500]
    assert r.json()["sglext"]["output_ids"] == [want[0]]  # one list per choice

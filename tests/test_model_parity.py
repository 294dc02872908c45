"""Our model class through the real SGLang server equals transformers, token for token.

Every tiny preset; prompts of 1, 17 and 60 tokens; four concurrent prompts; prefill
log-probabilities within fp16 tolerance; one image request.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch
from hf_reference import (
    DEEP_IMAGE_QUESTION,
    IMAGE_QUESTION,
    hf_greedy,
    hf_greedy_image,
    hf_logprobs,
    server_greedy_image,
)
from one_ahead import OneAhead

from rio_sglang.logmarks import SERVING_MARK
from rio_sglang.sglang_server import start_server
from rio_sglang.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.server
NEW = 8
PROMPT_LENGTHS = (1, 17, 60)
# Each prompt's greedy tokens keep a top-2 gap of at least 2 * MIN_MARGIN on every preset. Seed 17
# for the 17-token prompt was a near-tie on tiny-deep (a gap of 0.0156 at its 5th token in one
# run, one fp16 step).
LENGTH_SEEDS = {1: 1, 17: 1017, 60: 60}
PRESETS = ["tiny", "tiny-deep", "tiny-wide"]


@pytest.fixture(scope="module")
def preset_starts(request, tmp_path_factory):
    def start(key):
        preset = PRESETS[key]
        if preset == "tiny":  # the session server: this same checkpoint (tiny, seed 0) and flags
            return None
        ckpt = write_tiny_checkpoint(tmp_path_factory.mktemp(preset) / "ckpt", preset, seed=0)
        return start_server(ckpt, log_path=tmp_path_factory.mktemp("logs") / f"{preset}.log"), ckpt

    starts = OneAhead(request, start, "preset_server")
    yield starts
    starts.stop()


@pytest.fixture(scope="module", params=PRESETS)
def preset_server(request, preset_starts):
    started = preset_starts.take(request.param_index)
    if started is None:
        yield "tiny", request.getfixturevalue("tiny_ckpt"), request.getfixturevalue("server")
        return
    srv, ckpt = started
    try:
        srv.wait_ready(timeout=600)
        yield request.param, ckpt, srv
    finally:
        srv.stop()


def prompt(n: int, seed: int, vocab: int = 500) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(13, vocab) for _ in range(n)]  # ordinary tokens (specials are 0..12)


def generate(srv, ids: list[int], **extra) -> dict:
    body = {"input_ids": ids, "sampling_params": {
        "max_new_tokens": NEW, "min_new_tokens": NEW, "temperature": 0}, **extra}
    r = requests.post(srv.url + "/generate", json=body, timeout=900)
    assert r.status_code == 200, r.text[:500]
    return r.json()


@pytest.mark.parametrize("length", PROMPT_LENGTHS)
def test_greedy_tokens_equal_transformers(preset_server, length):
    _, ckpt, srv = preset_server
    assert SERVING_MARK in srv.log_path.read_text()
    ids = prompt(length, seed=LENGTH_SEEDS[length])
    assert generate(srv, ids)["output_ids"] == hf_greedy(ckpt, ids, NEW)


def test_concurrent_batch_equals_transformers(preset_server):
    _, ckpt, srv = preset_server
    # Seeds 800 + n: every greedy token of every preset keeps a top-2 gap >= 2 * MIN_MARGIN.
    # With 100 + n, tiny-wide's 3-token prompt tied at its third token (0.0156, one fp16 step).
    prompts = [prompt(n, seed=800 + n) for n in (3, 9, 14, 22)]
    with ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(lambda ids: generate(srv, ids)["output_ids"], prompts))
    assert got == [hf_greedy(ckpt, ids, NEW) for ids in prompts]


def test_prefill_logprobs_within_fp16_tolerance(preset_server):
    _, ckpt, srv = preset_server
    ids = prompt(24, seed=7)
    meta = generate(srv, ids, return_logprob=True, logprob_start_len=0)["meta_info"]
    got = torch.tensor([lp for lp, _, _ in meta["input_token_logprobs"][1:]])
    want = hf_logprobs(ckpt, ids)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-2, rtol=1e-2)


def test_image_request_equals_transformers(preset_server):
    preset, ckpt, srv = preset_server
    if preset == "tiny-wide":
        pytest.skip("the vision tower is the same in every preset: tiny and tiny-deep suffice")
    # tiny-deep: IMAGE_QUESTION's 4th greedy token is a near-tie (hf_reference.py)
    question = DEEP_IMAGE_QUESTION if preset == "tiny-deep" else IMAGE_QUESTION
    assert server_greedy_image(srv.url, NEW, question) == hf_greedy_image(ckpt, question, NEW)

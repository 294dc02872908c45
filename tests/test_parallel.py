"""Our class split over several ranks (TP, TP+EP, PP) on the CPU equals transformers.

Each row starts a real multi-process `sglang.launch_server` on the `tiny-deep` checkpoint
(8 layers: attention at 3 and 7, 8 experts top-2), reads every rank's layout line back from the
log (which layers, experts and expert I-shard it holds), then checks greedy tokens for a small
concurrent batch against transformers, and that latent reasoning is refused with HTTP 400.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hf_reference import hf_greedy, hf_greedy_image, sample_image

from rio_sglang.server import LAYOUT_MARK, launch
from rio_sglang.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.server
NEW = 6
LAYERS, EXPERTS, INTER = 8, 8, 32  # the tiny-deep preset


def layout(tp, pp, layers, ep, experts, moe_tp, inter) -> str:
    return (f"tp {tp} pp {pp} layers {layers[0]}-{layers[1]} ep {ep} experts "
            f"{experts[0]}-{experts[1]} moe_tp {moe_tp} expert_inter {inter}")


# name, extra flags, expert layout on disk, every rank's expected layout line, image request
ROWS = [
    ("tp2", ["--tp-size", "2"], "per-expert",
     {layout(f"{r}/2", "0/1", (0, LAYERS), "0/1", (0, EXPERTS), f"{r}/2", INTER // 2)
      for r in (0, 1)}, False),
    ("tp2-ep2", ["--tp-size", "2", "--ep-size", "2"], "fused",
     {layout(f"{r}/2", "0/1", (0, LAYERS), f"{r}/2", (4 * r, 4 * r + 4), "0/1", INTER)
      for r in (0, 1)}, False),
    ("pp2", ["--pp-size", "2"], "per-expert",
     {layout("0/1", f"{s}/2", (4 * s, 4 * s + 4), "0/1", (0, EXPERTS), "0/1", INTER)
      for s in (0, 1)}, True),
]


@pytest.fixture(scope="module", params=ROWS, ids=[r[0] for r in ROWS])
def parallel_server(request, tmp_path_factory):
    name, flags, expert_layout, want_layout, image = request.param
    ckpt = write_tiny_checkpoint(tmp_path_factory.mktemp(name) / "ckpt", "tiny-deep", seed=0,
                                 expert_layout=expert_layout)
    srv = launch(ckpt, extra_args=flags, log_path=tmp_path_factory.mktemp("logs") / f"{name}.log")
    try:
        srv.wait_ready(timeout=600)
        yield ckpt, srv, want_layout, image
    finally:
        srv.stop()


def generate(srv, body: dict) -> requests.Response:
    return requests.post(srv.url + "/generate", json=body, timeout=900)


def greedy(srv, ids: list[int]) -> list[int]:
    r = generate(srv, {"input_ids": ids, "sampling_params": {
        "max_new_tokens": NEW, "min_new_tokens": NEW, "temperature": 0}})
    assert r.status_code == 200, r.text[:500]
    return r.json()["output_ids"]


def test_every_rank_holds_its_share(parallel_server):
    _, srv, want_layout, _ = parallel_server
    got = set(re.findall(LAYOUT_MARK + r": (.*)", srv.log_path.read_text()))
    assert got == want_layout


def test_latent_reasoning_refused_with_400(parallel_server):
    _, srv, _, _ = parallel_server
    r = generate(srv, {"text": "Hi", "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"rio_reasoning": {"mode": "switch"}}}})
    assert r.status_code == 400, r.text[:300]
    assert "rio_reasoning.mode" in r.text and "PP" in r.text


def test_concurrent_greedy_equals_transformers(parallel_server):
    ckpt, srv, _, _ = parallel_server
    prompts = [[13 + (7 * i + 3 * j) % 480 for j in range(n)] for i, n in enumerate((17, 5))]
    with ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(lambda ids: greedy(srv, ids), prompts))
    assert got == [hf_greedy(ckpt, ids, NEW) for ids in prompts]


def test_image_request_equals_transformers(parallel_server):
    ckpt, srv, _, image = parallel_server
    if not image:
        pytest.skip("the vision tower is replicated under TP/EP: the PP row covers the split")
    _, url = sample_image()
    body = {"model": "default", "max_tokens": NEW, "min_tokens": NEW, "temperature": 0,
            "return_output_ids_in_sglext": True, "separate_reasoning": False,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "Describe the image."}]}]}
    r = requests.post(srv.url + "/v1/chat/completions", json=body, timeout=900)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["sglext"]["output_ids"] == [hf_greedy_image(ckpt, "Describe the image.", NEW)]

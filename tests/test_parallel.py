"""Our class split over several ranks (TP, TP+EP, PP) on the CPU equals transformers.

Each row starts a real multi-process `sglang.launch_server` on a tiny checkpoint, reads every
rank's layout line back from the log (which layers, experts and expert I-shard it holds), then
checks greedy tokens for a small concurrent batch against transformers. Switching reasoning
equals `reference.py` token for token and mode for mode: under TP every rank mixes the vocab
shard of the embedding it holds (no table copy; one all-reduce completes the mixture); under PP
the last stage steps and mixes its copy of the vocab rows, and SGLang's output relay carries the
next inputs to the first stage, which embeds them.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hf_reference import DEEP_IMAGE_QUESTION, hf_greedy, hf_greedy_image, server_greedy_image
from one_ahead import OneAhead
from test_reasoning_server import REF_NEW, REF_PROMPT_SEED, REFERENCE_CASES, reference_run
from test_reasoning_server import gen as gen_reasoning

from rio_sglang.logmarks import LAYOUT_MARK, REASONING_MARK
from rio_sglang.sglang_server import start_server
from rio_sglang.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.server
NEW = 6
EXPERTS, INTER = 8, 32  # tiny and tiny-deep: 4 and 8 layers
SWITCH_CASES = [c for c in REFERENCE_CASES if c[1]["mode"] == "switch"]
PREFIX = 5  # steps of a latent chain compared exactly on the expert-parallel row
# The switch cases' prompt per preset: one whose fp32 reference chain also survives an fp16 model
# unchanged (both cases) and keeps wide decision margins (tiny-deep seed 17: top-2 logit gap
# >= 1.16, entropy gap >= 0.13 over 10 steps). Seed 30, chosen on `tiny`, is fragile on tiny-deep:
# an fp16 transformers run already leaves its chain, and an fp32 summation order in the expert
# kernels flips its step 4.
REF_SEEDS = {"tiny": REF_PROMPT_SEED, "tiny-deep": 17}


def layout(tp, pp, layers, ep, experts, moe_tp, inter) -> str:
    return (f"tp {tp} pp {pp} layers {layers[0]}-{layers[1]} ep {ep} experts "
            f"{experts[0]}-{experts[1]} moe_tp {moe_tp} expert_inter {inter}")


# name, preset, extra flags, expert layout on disk, every rank's expected layout line,
# latent reasoning: "exact" (equals the reference) or "prefix" (see below), image request
ROWS = [
    ("tp2", "tiny", ["--tp-size", "2"], "per-expert",
     {layout(f"{r}/2", "0/1", (0, 4), "0/1", (0, EXPERTS), f"{r}/2", INTER // 2)
      for r in (0, 1)}, "exact", False),
    ("tp2-ep2", "tiny", ["--tp-size", "2", "--ep-size", "2"], "fused",
     {layout(f"{r}/2", "0/1", (0, 4), f"{r}/2", (4 * r, 4 * r + 4), "0/1", INTER)
      for r in (0, 1)}, "prefix", False),
    # tiny-deep: attention layers 3 and 7, one on each stage
    ("pp2", "tiny-deep", ["--pp-size", "2"], "per-expert",
     {layout("0/1", f"{s}/2", (4 * s, 4 * s + 4), "0/1", (0, EXPERTS), "0/1", INTER)
      for s in (0, 1)}, "exact", True),
]


DUMMY = "test_dummy_weights_at_tp2_serve_latent_requests"  # its server starts ahead too


@pytest.fixture(scope="module")
def parallel_starts(request, tmp_path_factory):
    def start(key):
        if key == DUMMY:
            from rio_sglang.tiny.writer import write_config_only

            root = tmp_path_factory.mktemp("dummy")
            ckpt = write_config_only(root / "cfg", "tiny")
            return (start_server(ckpt, extra_args=["--tp-size", "2", "--load-format", "dummy"],
                           log_path=root / "dummy.log"),)
        name, preset, flags, expert_layout, *_ = ROWS[key]
        ckpt = write_tiny_checkpoint(tmp_path_factory.mktemp(name) / "ckpt", preset, seed=0,
                                     expert_layout=expert_layout)
        return start_server(ckpt, extra_args=flags,
                      log_path=tmp_path_factory.mktemp("logs") / f"{name}.log"), ckpt

    starts = OneAhead(request, start, "parallel_server", then=(DUMMY,))
    yield starts
    starts.stop()


@pytest.fixture(scope="module", params=ROWS, ids=[r[0] for r in ROWS])
def parallel_server(request, parallel_starts):
    _, preset, _, _, want_layout, latent, image = request.param
    srv, ckpt = parallel_starts.take(request.param_index)
    try:
        srv.wait_ready(timeout=600)
        yield ckpt, srv, want_layout, latent, image, REF_SEEDS[preset]
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
    _, srv, want_layout, *_ = parallel_server
    got = set(re.findall(LAYOUT_MARK + r": (.*)", srv.log_path.read_text()))
    assert got == want_layout


def test_latent_mixture_rows_and_memory_per_rank(parallel_server):
    """Each rank logs the vocab rows it mixes and its reasoning buffers' memory. TP: the ranks'
    own embedding shards, disjoint and covering V, no copy. PP: the first stage mixes nothing of
    its own copy; the last keeps exactly V x H model-dtype rows (TP 1 there)."""
    ckpt, srv, *_ = parallel_server
    text = json.loads((ckpt / "config.json").read_text())["text_config"]
    V, H = text["vocab_size"], text["hidden_size"]
    lines = re.findall(REASONING_MARK + r": (.*)", srv.log_path.read_text())
    parsed = [re.search(r"vocab \[(\d+), (\d+)\) of (\d+), (.*?); reasoning buffers "
                        r"([\d.]+) MiB", ln).groups() for ln in lines]
    copies = [p for p in parsed if p[3].startswith("a copy")]
    shards = sorted((int(a), int(b)) for a, b, _, desc, _ in parsed if "no copy" in desc)
    assert all(int(v) == V and float(mib) > 0 for _, _, v, _, mib in parsed)
    if "--pp-size" in srv.argv:
        assert shards == [(0, V)] and len(copies) == 1
        assert copies[0][3] == f"a copy of {V * H * 2 / 2**20:.2f} MiB"  # fp16 rows, TP 1
    else:
        assert not copies and len(shards) == 2  # two TP ranks
        assert shards[0][0] == 0 and shards[0][1] == shards[1][0] and shards[1][1] == V


@pytest.mark.parametrize("case", SWITCH_CASES, ids=[c[0] for c in SWITCH_CASES])
def test_switching_reasoning_equals_the_reference(parallel_server, case):
    ckpt, srv, _, latent, _, seed = parallel_server
    _, spec, expected = case
    prompt, ref, ref_modes = reference_run(ckpt, spec, expected, seed=seed)
    got = gen_reasoning(srv, prompt, spec, new=REF_NEW)
    stats = got["meta_info"]["rio_reasoning"]
    assert stats["latent_steps"] == stats["modes"].count("L") > 0
    assert stats["explicit_steps"] == stats["modes"].count("E")
    if latent == "exact":
        assert got["output_ids"] == ref.tokens
        assert stats["modes"] == ref_modes
        assert stats["switches"] == ref.stats.switches
        return
    # Expert parallelism sums the routed experts in another order: its prefill log-probs are as
    # close to transformers as TP 1's (~0.02), but one entropy comparison of the switch-both-ways
    # chain flips at step 5 (the fp16/fp32 latent-chain margin noted in test_reasoning_server).
    # Up to there the chain equals the reference; the rest is served and counted consistently.
    assert got["output_ids"][:PREFIX] == ref.tokens[:PREFIX]
    assert stats["modes"][:PREFIX] == ref_modes[:PREFIX]


def test_concurrent_greedy_equals_transformers(parallel_server):
    ckpt, srv, *_ = parallel_server
    # Offset 16: every greedy token keeps a top-2 gap >= 2 * MIN_MARGIN on tiny and tiny-deep
    # (offset 13 came within 2 fp16 steps, 0.0312, on tiny-deep's 4th token).
    prompts = [[16 + (7 * i + 3 * j) % 480 for j in range(n)] for i, n in enumerate((17, 5))]
    with ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(lambda ids: greedy(srv, ids), prompts))
    assert got == [hf_greedy(ckpt, ids, NEW) for ids in prompts]


def test_image_request_equals_transformers(parallel_server):
    ckpt, srv, _, _, image, _ = parallel_server
    if not image:
        pytest.skip("the vision tower is replicated under TP/EP: the PP row covers the split")
    assert server_greedy_image(srv.url, NEW, DEEP_IMAGE_QUESTION) == \
        hf_greedy_image(ckpt, DEEP_IMAGE_QUESTION, NEW)


def test_dummy_weights_at_tp2_serve_latent_requests(parallel_starts):
    """`--load-format dummy` (the benchmark's slices) never calls our loader: the whole-table
    copy for latent steps is then gathered from the ranks' vocab shards on first use."""
    (srv,) = parallel_starts.take(DUMMY)
    try:
        srv.wait_ready(timeout=600)
        for mode in ("latent", "switch"):
            got = gen_reasoning(srv, [13, 14, 15, 16], {"mode": mode, "window": 1}, new=5)
            stats = got["meta_info"]["rio_reasoning"]
            assert len(got["output_ids"]) == 5
            assert stats["latent_steps"] + stats["explicit_steps"] == len(stats["modes"]) == 5
            assert stats["modes"][0] == "L"  # both modes start latent
        assert greedy(srv, [13, 14, 15])  # explicit requests unaffected
    finally:
        srv.stop()

"""Latent / switch batches in CUDA-graph decode (GPU only: deselected on CPU CI).

The decode graph captures our embedding override (a gather of published next inputs); the
SwiReasoning step runs around SGLang's sampler, outside the graph. A server with decode graphs
must then answer a mixed batch exactly as the same server decoding eagerly, and its decode
batches holding latent requests must report that they ran the graph.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_reasoning_server import NO_MATH, gen, ids_prompt

from rio_sglang.sglang_server import start_server

pytestmark = [pytest.mark.gpu, pytest.mark.server]
GPU_FLAGS = ["--dtype", "bfloat16", "--mem-fraction-static", "0.3", "--decode-log-interval", "1",
             "--skip-server-warmup"]
JOBS = [(ids_prompt(6, 60), None), (ids_prompt(5, 61), {"mode": "latent", **NO_MATH}),
        (ids_prompt(7, 62), {"mode": "switch", "window": 1, **NO_MATH}),
        (ids_prompt(4, 63), {"mode": "switch", "window": 2, "max_switches": 1, **NO_MATH})]


def answers(tiny_ckpt, log_path, extra=()):
    srv = start_server(tiny_ckpt, cpu=False, extra_args=[*GPU_FLAGS, *extra], log_path=log_path)
    try:
        srv.wait_ready(timeout=900)
        with ThreadPoolExecutor(len(JOBS)) as pool:
            outs = list(pool.map(lambda job: gen(srv, *job, new=12), JOBS))
        return [(o["output_ids"], o["meta_info"].get("rio_reasoning")) for o in outs]
    finally:
        srv.stop()


def test_cuda_graph_decode_equals_eager_for_a_mixed_batch(tiny_ckpt, tmp_path):
    graphed = answers(tiny_ckpt, tmp_path / "graph.log")
    eager = answers(tiny_ckpt, tmp_path / "eager.log", ["--cuda-graph-backend-decode", "disabled"])
    assert graphed == eager
    assert all(stats["latent_steps"] > 0 for _, stats in graphed[1:])
    decode = re.findall(r"Decode batch.*?graph: (True|False)", (tmp_path / "graph.log").read_text())
    assert "True" in decode and "False" not in decode

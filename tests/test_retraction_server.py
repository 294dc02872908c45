"""Under memory pressure a latent request keeps its trajectory (issue 32), through the real
server: SGLang retracts running requests when its KV pool runs out, and each retracted latent /
switch request equals its solo run, token for token and mode for mode; with the journal's bound
at zero, retracted requests report `resumed_from_tokens` and are still served.

The server: SGLang's stock Qwen3 class (`RIO_SWIREASONING=1`) on the tiny Qwen3 checkpoint, a KV
pool of 150 tokens (`--max-total-tokens`) and an optimistic scheduler
(`--schedule-conservativeness 0.1`; the new-token ratio SGLang raises after a retraction falls
back within a step, so the pool fills again and retracts again). Six requests of 24 + 48 tokens
arrive in one batch (a deterministic schedule). No `ignore_eos`: with it SGLang reserves every
new token and queues instead of retracting. Full attention only: a re-prefilled position has
the bits its decode step had on the CPU platform (`rio_sglang/cpu/patches.py::rowwise_extend`);
Rio's GDN layers prefill in chunks and decode recurrently, which round differently.
"""

from __future__ import annotations

import os
import random

import pytest
import requests

from rio_sglang.sglang_server import start_server

pytestmark = pytest.mark.server
PRESSURE = ["--max-total-tokens", "150", "--schedule-conservativeness", "0.1"]
SCHEDULER = {"SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS": "1", "SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR": "0.02"}
PROMPT, NEW = 24, 48
NO_MATH = {"math_tokens_explicit": False}  # the tiny vocabulary is nearly all letters/digits
SPECS = [{"mode": "latent", **NO_MATH}, {"mode": "switch", "window": 4, **NO_MATH},
         {"mode": "latent"}, {"mode": "switch", "window": 1, **NO_MATH},
         {"mode": "latent", **NO_MATH}, {"mode": "switch", **NO_MATH}]


def prompts() -> list[list[int]]:
    rng = random.Random(32)
    return [[rng.randrange(13, 500) for _ in range(PROMPT)] for _ in SPECS]


def params(spec: dict) -> dict:
    return {"max_new_tokens": NEW, "temperature": 0, "custom_params": {"rio_reasoning": spec}}


def post(srv, body: dict):
    r = requests.post(srv.url + "/generate", json=body, timeout=1800)
    assert r.status_code == 200, (r.status_code, r.text[:400], srv.log_tail(30))
    return r.json()


def together(srv) -> list[dict]:
    """The six requests in one batch."""
    return post(srv, {"input_ids": prompts(), "sampling_params": [params(s) for s in SPECS]})


def retractions(out: dict) -> int:
    """How often SGLang retracted the request: its statistics and SGLang's own count agree."""
    stats = out["meta_info"]["rio_reasoning"]
    assert stats["retractions"] == out["meta_info"]["num_retractions"]
    return stats["retractions"]


@pytest.fixture(scope="module")
def servers(family_ckpt, tmp_path_factory):
    """Two servers, started together: the journal's default bound, and a bound of zero."""
    ckpt = family_ckpt("qwen3")
    logs = tmp_path_factory.mktemp("logs")
    started = {}
    try:
        for name, bound in (("kept", None), ("none-kept", "0")):
            environ = {**os.environ, "RIO_SWIREASONING": "1", **SCHEDULER}
            if bound is not None:
                environ["RIO_RESUME_MEMORY_MIB"] = bound
            started[name] = start_server(ckpt, stock=True, extra_args=PRESSURE, environ=environ,
                                         log_path=logs / f"{name}.log")
        yield started
    finally:
        for srv in started.values():
            srv.stop()


def test_retracted_latent_requests_equal_their_solo_runs(servers):
    srv = servers["kept"]
    srv.wait_ready(timeout=600)
    loaded = together(srv)
    solo = [post(srv, {"input_ids": ids, "sampling_params": params(spec)})
            for ids, spec in zip(prompts(), SPECS)]  # one at a time: none is retracted
    assert [retractions(out) for out in solo] == [0] * len(SPECS)
    hit = [i for i, out in enumerate(loaded) if retractions(out) > 0]
    assert len(hit) >= 2, f"retractions: {[retractions(out) for out in loaded]}"
    assert {SPECS[i]["mode"] for i in hit} == {"latent", "switch"}, hit
    for i, (got, want) in enumerate(zip(loaded, solo)):
        stats = dict(got["meta_info"]["rio_reasoning"])
        ref = dict(want["meta_info"]["rio_reasoning"])
        assert got["output_ids"] == want["output_ids"], (i, SPECS[i], stats["retractions"])
        assert stats.pop("modes") == ref.pop("modes"), i
        assert stats.pop("resumed_from_tokens") is ref.pop("resumed_from_tokens") is False
        stats.pop("retractions")
        assert ref.pop("retractions") == 0
        assert stats == ref, i
    assert "resume from tokens" not in srv.log_path.read_text()


def test_with_the_bound_at_zero_retracted_requests_resume_from_tokens(servers):
    srv = servers["none-kept"]
    srv.wait_ready(timeout=600)
    loaded = together(srv)
    assert any(retractions(out) > 0 for out in loaded)
    for out in loaded:
        stats = out["meta_info"]["rio_reasoning"]
        assert stats["resumed_from_tokens"] is (retractions(out) > 0)
        assert len(out["output_ids"]) == NEW
        # its state machine was restored, not started over: one step per token throughout
        assert stats["latent_steps"] + stats["explicit_steps"] == NEW == len(stats["modes"])
    assert "up to 0 MiB of host memory" in srv.log_path.read_text()

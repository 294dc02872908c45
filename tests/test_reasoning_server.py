"""SwiReasoning through the real server with our class: spec validation, per-request modes,
statistics, batch isolation, the radix-cache guard, and agreement with `reference.py`."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import pytest
import requests
from hf_reference import reasoning_reference, transitions
from one_ahead import OneAhead

from rio_sglang.reasoning import ReasoningSpec, resolve_tokens
from rio_sglang.sglang_server import start_server

pytestmark = pytest.mark.server
NEW = 10
NO_MATH = {"math_tokens_explicit": False}  # the tiny vocabulary is nearly all letters/digits


def ids_prompt(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(13, 500) for _ in range(n)]


def gen(server, ids, spec: dict | None, new: int = NEW, status: int = 200, **params) -> dict:
    sp = {"max_new_tokens": new, "temperature": 0, **params}
    if spec is not None:
        sp["custom_params"] = {"rio_reasoning": spec}
    r = requests.post(server.url + "/generate", json={"input_ids": ids, "sampling_params": sp},
                      timeout=900)
    assert r.status_code == status, (r.status_code, r.text[:400])
    return r.json()


# spec, the field the 400 must name
BAD_SPECS = [
    ({"mode": "bogus"}, "mode"),
    ({"mode": "switch", "window": -1}, "window"),
    ({"mode": "latent", "thinking_budget": "ten"}, "thinking_budget"),
    ({"mode": "switch", "soft_topk": 0}, "soft_topk"),
    ({"mode": "switch", "soft_topk": 10_000}, "soft_topk"),
    ({"mode": "switch", "surprise": 1}, "surprise"),
]


@pytest.mark.parametrize("spec,field", BAD_SPECS, ids=[f for _, f in BAD_SPECS])
def test_bad_spec_is_400_naming_the_field(server, spec, field):
    r = requests.post(server.url + "/generate", timeout=120, json={
        "input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 2,
                                                     "custom_params": {"rio_reasoning": spec}}})
    assert r.status_code == 400, r.text[:300]
    assert f"rio_reasoning.{field}" in r.text
    assert gen(server, [20, 30, 40], None, new=2)["meta_info"]["completion_tokens"] == 2


@pytest.mark.parametrize("mode", ["explicit", "latent", "switch"])
def test_each_mode_reports_statistics(server, mode):
    # The tiny vocabulary is mostly letters and digits, which the math-token rule keeps
    # explicit: switch it off so that a switch request's first (latent) step shows.
    spec = {"mode": mode} if mode == "explicit" else {"mode": mode, "math_tokens_explicit": False}
    out = gen(server, ids_prompt(6, seed=1), spec)
    stats = out["meta_info"]["rio_reasoning"]
    steps = stats["latent_steps"] + stats["explicit_steps"]
    assert len(out["output_ids"]) == NEW
    if mode == "explicit":
        assert stats["latent_steps"] == 0 and stats["explicit_steps"] == NEW
    else:
        assert steps == NEW == len(stats["modes"])  # every emitted token is one step
        assert stats["latent_steps"] > 0


def test_explicit_unaffected_by_latent_neighbours_and_mixed_batch_equals_solo(server):
    jobs = [(ids_prompt(5, 11), None), (ids_prompt(7, 12), {"mode": "explicit"}),
            (ids_prompt(4, 13), {"mode": "latent"}), (ids_prompt(6, 14), {"mode": "switch"})]
    solo = [gen(server, ids, spec)["output_ids"] for ids, spec in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        batched = list(pool.map(lambda j: gen(server, *j)["output_ids"], jobs))
    assert batched == solo


def test_more_requests_than_slots_each_equal_their_solo_run(server):
    """12 concurrent requests on a server of 8 running slots (CPU_FLAGS): some wait, and every
    slot that frees is reused by a request of another mode. Nothing is lost, and each answer and
    its statistics equal the request's solo run (slot state is reset on reuse)."""
    modes = [None, {"mode": "latent", **NO_MATH}, {"mode": "switch", "window": 1, **NO_MATH}]
    jobs = [(ids_prompt(3 + i % 4, 40 + i), modes[i % 3]) for i in range(12)]
    new = 4

    def answer(job):
        out = gen(server, *job, new=new)
        return out["output_ids"], out["meta_info"].get("rio_reasoning")

    solo = [answer(job) for job in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        loaded = list(pool.map(answer, jobs))
    assert loaded == solo
    assert all(len(ids) == new for ids, _ in loaded)
    assert all((stats is None) == (spec is None) for (_, stats), (_, spec) in zip(loaded, jobs))


def test_latent_kv_is_never_reused_by_the_prefix_cache(server):
    prompt = ids_prompt(9, seed=21)
    first = gen(server, prompt, {"mode": "latent"})
    again = gen(server, prompt + first["output_ids"], None, new=2)
    assert again["meta_info"]["cached_tokens"] <= len(prompt)


# name, spec, the transitions the reference shows for it (asserted, so the table stays honest)
REFERENCE_CASES = [
    ("explicit", {"mode": "explicit"}, set()),
    # Latent mode is the thinking-budget row: an all-latent chain of 10 steps drifts between the
    # fp16 server and the fp32 reference on this tiny model (diverging after ~4 steps).
    ("switch-both-ways", {"mode": "switch", "window": 1, **NO_MATH},
     {"latent->explicit", "explicit->latent"}),
    ("switch-limit", {"mode": "switch", "window": 1, "max_switches": 1, **NO_MATH},
     {"latent->explicit", "convergence"}),
    ("thinking-budget", {"mode": "latent", "thinking_budget": 4, **NO_MATH}, {"budget"}),
]
# A prompt whose every decision in the fp32 reference has a margin (top-2 logit gap >= 0.14,
# entropy gap >= 0.014 on the tiny checkpoint) and shows every transition within 10 steps;
# longer latent chains let the fp16 server drift from the fp32 reference.
REF_NEW = 10
REF_PROMPT_SEED = 30


def reference_run(ckpt, spec: dict, expected: set[str], seed: int = REF_PROMPT_SEED,
                  new: int = REF_NEW):
    """`reference.py` on `seed`'s prompt for `new` steps: (prompt, result, modes as "L"/"E"),
    asserting that the transitions a case names really happen in the reference."""
    prompt, ref, ref_modes = _reference(str(ckpt), json.dumps(spec, sort_keys=True), seed, new)
    assert expected <= transitions(ref_modes, ref.stats)
    return prompt, ref, ref_modes


@cache
def _reference(ckpt: str, spec: str, seed: int, new: int):
    """reference_run's run, once per checkpoint, spec, prompt and length (several tests and
    servers compare with the same one)."""
    prompt = ids_prompt(8, seed=seed)
    ref, modes, _ = reasoning_reference(ckpt, prompt, spec, new)
    return prompt, ref, modes


@pytest.mark.parametrize("name,spec,expected", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_greedy_tokens_and_modes_equal_the_reference(server, tiny_ckpt, name, spec, expected):
    prompt, ref, ref_modes = reference_run(tiny_ckpt, spec, expected)
    got = gen(server, prompt, spec, new=REF_NEW)
    stats = got["meta_info"]["rio_reasoning"]
    assert got["output_ids"] == ref.tokens
    if spec["mode"] == "explicit":
        assert stats["modes"] == "E" * REF_NEW and stats["latent_steps"] == 0
        return
    assert_equals_reference(got, ref, ref_modes, spec)


def assert_equals_reference(got: dict, ref, ref_modes: str, spec: dict) -> None:
    stats = dict(got["meta_info"]["rio_reasoning"])
    assert stats.pop("modes") == ref_modes
    # The spec the request ran with (its own: this server has no default), all fields filled in.
    assert stats.pop("spec") == ReasoningSpec.from_json(spec).to_json()
    assert stats.pop("from_default") is False
    assert stats.pop("retractions") == 0 and stats.pop("resumed_from_tokens") is False
    assert stats == ref.stats.to_json()


# The third switch (> 2 x max_switches) queues the termination text and an answer budget of 2
# tokens, where the reference stops; the server ends the request with one more token, EOS.
TERMINATION = {"mode": "switch", "window": 1, "max_switches": 1, "termination_budget": 2,
               **NO_MATH}
TERMINATION_SEED, TERMINATION_NEW = 37, 16


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_answer_budget_ends_the_request_like_the_reference(server, tiny_ckpt, ignore_eos):
    """The spent budget ends the request with the same tokens whatever `ignore_eos` says (which
    `sglang.bench_serving` sends by default), its finish reason naming the budget."""
    from transformers import AutoTokenizer

    prompt, ref, ref_modes = reference_run(tiny_ckpt, TERMINATION, {"termination"},
                                           seed=TERMINATION_SEED, new=TERMINATION_NEW)
    assert len(ref.tokens) < TERMINATION_NEW  # the budget, not max_new_tokens, ended it
    eos = resolve_tokens(AutoTokenizer.from_pretrained(tiny_ckpt)).eos_id
    got = gen(server, prompt, TERMINATION, new=TERMINATION_NEW, ignore_eos=ignore_eos)
    assert got["output_ids"] == ref.tokens + [eos]
    assert got["meta_info"]["finish_reason"]["type"] == "stop"
    assert got["meta_info"]["finish_reason"] == {"type": "stop", "matched": eos,
                                                 "reason": "answer_budget"}
    assert_equals_reference(got, ref, ref_modes, TERMINATION)


CHUNKED = "test_chunked_prefill_steps_once_the_prompt_is_complete"


@pytest.fixture(scope="module", autouse=True)
def chunked_starts(request, tiny_ckpt, tmp_path_factory):
    """The chunked server starts as this module begins: its start overlaps the tests above."""
    def start(_):
        return (start_server(tiny_ckpt, extra_args=["--chunked-prefill-size", "4"],
                       log_path=tmp_path_factory.mktemp("logs") / "chunked.log"),)

    starts = OneAhead(request, start, then=(CHUNKED,))
    starts.start_first()
    yield starts
    starts.stop()


@pytest.fixture(scope="module")
def chunked_server(chunked_starts):
    """Prompts prefilled 4 tokens at a time: an 8-token prompt takes a middle chunk first."""
    (srv,) = chunked_starts.take(CHUNKED)
    try:
        srv.wait_ready(timeout=600)
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("case", REFERENCE_CASES[1:3], ids=[c[0] for c in REFERENCE_CASES[1:3]])
def test_chunked_prefill_steps_once_the_prompt_is_complete(chunked_server, tiny_ckpt, case):
    """A middle chunk samples a placeholder: stepping on it would add a step (modes, counts)."""
    _, spec, expected = case
    prompt, ref, ref_modes = reference_run(tiny_ckpt, spec, expected)
    got = gen(chunked_server, prompt, spec, new=REF_NEW)
    assert got["output_ids"] == ref.tokens
    assert_equals_reference(got, ref, ref_modes, spec)
    assert "chunked_prefill_size=4," in chunked_server.log_path.read_text()


def test_no_metrics_without_the_flag(server):
    """This server runs without --enable-metrics: SGLang serves no /metrics, so no reasoning
    series either (tests/test_launch.py reads them where the flag is on)."""
    assert requests.get(server.url + "/metrics", timeout=60).status_code == 404

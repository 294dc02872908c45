"""rio_frontend against the real CPU server: programs with three reasoning modes and forked
branches answer with statistics that fit each mode, OpenAI chat and completion streams end with
the same statistics as non-streaming answers, and a bad spec over HTTP is a 400 (the offline
checks and the programs themselves: test_frontend.py)."""

from __future__ import annotations

import pytest
from test_frontend import THREE, branches, three_modes

import rio_frontend as rio
from rio_frontend import wire
from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec, ReasoningStats


@pytest.fixture(scope="module")
def answered(server):
    state = three_modes.run(max_tokens=4, backend=rio.RioEndpoint(server.url))
    assert state.error() is None, server.log_tail(20)
    return state


def assert_stats_fit(spec: ReasoningSpec, stats: ReasoningStats, completion_tokens: int):
    assert stats.latent_steps + stats.explicit_steps <= completion_tokens
    if spec.mode == "explicit":
        assert (stats.latent_steps, stats.switches) == (0, 0)
        assert not (stats.injected_convergence or stats.injected_termination)
    if spec.mode == "latent":
        assert stats.switches == 0


@pytest.mark.server
def test_three_modes_answer(answered):
    for name in ("a", "b", "c", "plain"):
        meta = answered.get_meta_info(name)
        assert meta["completion_tokens"] == 4 and meta["finish_reason"]["type"] == "length"
    assert answered["a_reasoning_content"]
    assert answered["b"].startswith("<think>\n") and answered["c"].startswith("<think>\n")


@pytest.mark.server
def test_three_modes_report_stats_fitting_the_mode(answered):
    stats = {name: rio.stats(answered, name) for name in THREE}
    for name, spec in THREE.items():
        assert_stats_fit(spec, stats[name], answered.get_meta_info(name)["completion_tokens"])


@pytest.mark.server
def test_forked_branches_with_different_modes_answer(server):
    specs = [rio.latent(), rio.switching(max_switches=1)]
    state = branches.run(specs=specs, backend=rio.RioEndpoint(server.url))
    assert state.error() is None, server.log_tail(20)
    for fork, spec in zip(state.ret_value, specs):
        assert fork["pick"].startswith("<think>\n")
        meta = fork.get_meta_info("pick")
        assert meta["completion_tokens"] == 4
        assert_stats_fit(spec, wire.stats_from_meta_info(meta), 4)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="none")


@pytest.mark.server
def test_openai_stream_returns_the_non_stream_text(client):
    body = {"model": "default", "messages": [{"role": "user", "content": "Name a prime."}],
            "max_tokens": 6, "temperature": 0,
            "extra_body": rio.openai_extra_body(rio.switching())}
    full = client.chat.completions.create(**body)
    streamed = rio.collect_stream(client.chat.completions.create(stream=True, **body))
    msg = full.choices[0].message
    assert full.usage.completion_tokens == 6
    assert (streamed.reasoning, streamed.content, streamed.finish_reason) == (
        rio.reasoning_content(msg) or "", msg.content or "", full.choices[0].finish_reason)
    assert streamed.reasoning + streamed.content
    # The stream's last chunk before [DONE] carries the same statistics as the full response.
    assert streamed.stats is not None and streamed.stats == rio.openai_stats(full)
    assert streamed.stats.latent_steps + streamed.stats.explicit_steps == 6  # one per token


@pytest.mark.server
def test_openai_completions_take_the_spec(client):
    r = client.completions.create(model="default", prompt="Hello", max_tokens=2, temperature=0,
                                  extra_body=rio.openai_extra_body(rio.latent()))
    assert r.usage.completion_tokens == 2
    assert_stats_fit(rio.latent(), rio.openai_stats(r), 2)


@pytest.mark.server
def test_openai_completion_stream_ends_with_the_statistics(client):
    body = {"model": "default", "prompt": "Hello", "max_tokens": 4, "temperature": 0,
            "extra_body": rio.openai_extra_body(rio.switching(window=1))}
    full = client.completions.create(**body)
    chunks = list(client.completions.create(stream=True, **body))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    stats = [rio.openai_stats(c) for c in chunks]
    assert text == full.choices[0].text
    # exactly one chunk, the last, carries statistics, equal to the non-streaming ones
    assert [s is not None for s in stats] == [False] * (len(chunks) - 1) + [True]
    assert stats[-1] == rio.openai_stats(full)


@pytest.mark.server
@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions"])
def test_bad_spec_over_http_is_400(server, path):
    import requests

    bad = {SPEC_KEY: {"mode": "fast"}}
    if path == "/generate":
        body = {"text": "Hi", "sampling_params": {"max_new_tokens": 1, "custom_params": bad}}
    else:
        body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 1, "custom_params": bad}
    r = requests.post(server.url + path, json=body, timeout=300)
    assert r.status_code == 400 and "rio_reasoning.mode" in r.text

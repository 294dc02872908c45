"""rio_frontend: specs checked before any request, the wire format, per-gen and per-branch specs.

What a program sends is read by a local capture server (a real HTTP server that records each
/generate body and echoes the spec's mode); what the model answers: test_frontend_server.py.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sglang as sgl

import rio_frontend as rio
from rio_frontend import wire
from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec, ReasoningSpecError, ReasoningStats

FAKE_STATS = {"latent_steps": 2, "explicit_steps": 1, "switches": 1, "injected_convergence": False,
              "injected_termination": False, "forced_think_end": False, "added_later": 7}

# (how the caller asks, error type, field the error names or None)
BAD_INPUT = [
    (lambda: rio.latent(window=0), ReasoningSpecError, "window"),
    (lambda: rio.switching(max_switches="2"), ReasoningSpecError, "max_switches"),
    (lambda: rio.latent(max_switches=2), ReasoningSpecError, "max_switches"),
    (lambda: rio.latent(cold_stop_threshold=0.1), ReasoningSpecError, "cold_stop_steps"),
    (lambda: rio.switching(temperature=0.6), ReasoningSpecError, "temperature"),
    (lambda: rio.latent(mode="switch"), ReasoningSpecError, "mode"),
    (lambda: rio.as_spec("fast"), ReasoningSpecError, "mode"),
    (lambda: rio.as_spec({"mode": "latent", "alpha0": "1"}), ReasoningSpecError, "alpha0"),
    (lambda: rio.as_spec(3), TypeError, None),
    (lambda: rio.gen("a", reasoning="fast"), ReasoningSpecError, "mode"),
    (lambda: rio.gen("a", reasoning=[("mode", "latent")]), TypeError, None),
    (lambda: rio.gen("a", reasoning="latent", think="yes"), TypeError, None),
    (lambda: rio.gen("a", reasoning="latent", choices=["x", "y"]), TypeError, None),
    (lambda: rio.gen("a", reasoning="latent", max_new_tokens=4), TypeError, None),
    (lambda: rio.openai_extra_body("chain"), ReasoningSpecError, "mode"),
    (lambda: rio.openai_extra_body("latent", custom_params=[1]), TypeError, None),
]


@pytest.mark.parametrize("ask,error,field", BAD_INPUT)
def test_bad_input_raises_a_clear_error(ask, error, field):
    with pytest.raises(error) as info:
        ask()
    if field is not None:
        assert info.value.field == field


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@sgl.function
def bad_program(s, reasoning):
    s += sgl.user("Hi")
    s += sgl.assistant(rio.gen("a", reasoning=reasoning, max_tokens=4))


@pytest.mark.parametrize("reasoning,error", [({"mode": "fast"}, ReasoningSpecError),
                                             (5, TypeError)])
def test_program_fails_before_any_request(reasoning, error):
    # Nothing listens on the port: a request would fail with a connection error instead.
    backend = rio.RioEndpoint(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(error):
        bad_program.run(reasoning=reasoning, backend=backend)


def test_wire_format():
    spec = rio.switching(max_switches=2, window=64)
    assert wire.custom_params(spec) == {SPEC_KEY: spec.to_json()}
    assert wire.custom_params(None) == {}
    assert wire.generate_sampling_params(spec) == {"custom_params": {SPEC_KEY: spec.to_json()}}
    assert wire.spec_from_custom_params(wire.custom_params(spec)) == spec
    body = rio.openai_extra_body(spec, custom_params={"mine": 1},
                                 chat_template_kwargs={"enable_thinking": False})
    assert body == {"custom_params": {"mine": 1, SPEC_KEY: spec.to_json()},
                    "chat_template_kwargs": {"enable_thinking": False}}
    assert rio.openai_extra_body(None) == {}
    assert json.loads(json.dumps(body)) == body


def test_stats_parsing():
    want = ReasoningStats(latent_steps=2, explicit_steps=1, switches=1)
    assert wire.stats_from_meta_info({"rio_reasoning": FAKE_STATS}) == want
    assert wire.stats_from_meta_info({"completion_tokens": 3}) is None
    assert wire.stats_from_meta_info(None) is None
    from openai.types.chat import ChatCompletion

    response = ChatCompletion.model_validate({
        "id": "x", "object": "chat.completion", "created": 0, "model": "default",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "42", "reasoning_content": "think"}}],
        "metadata": {"rio_reasoning": FAKE_STATS}})
    assert rio.openai_stats(response) == want
    assert rio.reasoning_content(response.choices[0].message) == "think"
    assert rio.openai_stats({"choices": []}) is None
    with pytest.raises(TypeError):
        wire.stats_from_meta_info({"rio_reasoning": [1, 2]})


class _Capture(BaseHTTPRequestHandler):
    """Records each /generate body; answers `<mode></think>\\n\\nanswer` with fake stats."""

    def do_GET(self):  # /get_model_info, for a plain sgl.RuntimeEndpoint
        self._send("application/json", json.dumps({"model_path": "/ckpt/rio"}))

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        spec = wire.spec_from_custom_params(body["sampling_params"].get("custom_params"))
        text = f"{spec.mode if spec else 'none'}</think>\n\nanswer"
        meta = {"completion_tokens": 3, "rio_reasoning": FAKE_STATS}
        if not body.get("stream"):
            return self._send("application/json", json.dumps({"text": text, "meta_info": meta}))
        events = [{"text": text[:end], "meta_info": meta} for end in (4, len(text))]
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send("text/event-stream", sse)

    def _send(self, kind: str, payload: str):
        data = payload.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def capture():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    srv.bodies = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv, rio.RioEndpoint(f"http://127.0.0.1:{srv.server_address[1]}")
    finally:
        srv.shutdown()
        srv.server_close()


def sent_specs(bodies: list[dict]) -> list[ReasoningSpec | None]:
    """The spec of every decoding /generate body (max_new_tokens 0 only commits a prefix)."""
    return [wire.spec_from_custom_params(b["sampling_params"].get("custom_params"))
            for b in bodies if b["sampling_params"]["max_new_tokens"] > 0]


THREE = {"a": rio.explicit(), "b": rio.latent(thinking_budget=64),
         "c": rio.switching(max_switches=2)}


@sgl.function
def three_modes(s, max_tokens):
    s += sgl.user("What is 2 + 3?")
    s += sgl.assistant(rio.separate_reasoning(rio.gen("a", reasoning=THREE["a"],
                                                      max_tokens=max_tokens, temperature=0)))
    s += sgl.user("Check it.")
    s += sgl.assistant(rio.gen("b", reasoning=THREE["b"], max_tokens=max_tokens, temperature=0))
    s += sgl.user("Once more.")
    s += sgl.assistant(rio.gen("c", reasoning=THREE["c"], max_tokens=max_tokens, temperature=0))
    s += sgl.user("Plain.")
    s += sgl.assistant(sgl.gen("plain", max_tokens=max_tokens, temperature=0))


def test_three_gens_send_three_specs(capture):
    srv, backend = capture
    state = three_modes.run(max_tokens=4, backend=backend)
    assert state.error() is None
    assert sent_specs(srv.bodies) == [THREE["a"], THREE["b"], THREE["c"], None]
    rio_bodies = srv.bodies[:3]
    assert all(b["text"].endswith("<|im_start|>assistant\n<think>\n") for b in rio_bodies)
    assert "<think>" not in srv.bodies[3]["text"].rsplit("<|im_start|>assistant\n", 1)[1]
    assert state["a"].strip() == "answer" and state["a_reasoning_content"].strip() == "explicit"
    assert state["b"] == "<think>\nlatent</think>\n\nanswer"
    assert state["c"] == "<think>\nswitch</think>\n\nanswer"
    # Separated thinking leaves the history, as Rio's chat template drops it.
    assert "explicit</think>" not in state.text() and "latent</think>" in state.text()
    assert rio.stats(state, "b") == ReasoningStats(latent_steps=2, explicit_steps=1, switches=1)


@sgl.function
def branches(s, specs):
    s += sgl.user("Pick a colour.")
    s += sgl.assistant_begin()
    forks = s.fork(len(specs))
    forks += lambda i: rio.gen("pick", reasoning=specs[i], max_tokens=4, temperature=0)
    forks.join()
    s += sgl.assistant_end()
    return forks


def test_fork_keeps_per_branch_specs(capture):
    srv, backend = capture
    specs = [rio.latent(), rio.switching(max_switches=1), rio.explicit()]
    state = branches.run(specs=specs, backend=backend)
    forks = state.ret_value
    assert [f["pick"] for f in forks] == [f"<think>\n{s.mode}</think>\n\nanswer" for s in specs]
    assert sorted(sent_specs(srv.bodies), key=repr) == sorted(specs, key=repr)


def test_dsl_stream_sends_the_spec(capture):
    srv, backend = capture
    state = three_modes.run(max_tokens=4, backend=backend, stream=True)
    pieces = list(state.text_iter("b"))
    assert "".join(pieces) == "<think>\nlatent</think>\n\nanswer"
    assert "".join(state.text_iter()).endswith("answer<|im_end|>\n")  # runs to the end
    assert state.error() is None
    assert all(b["stream"] for b in srv.bodies)
    assert rio.stats(state, "b") == ReasoningStats(latent_steps=2, explicit_steps=1, switches=1)


def test_rio_gen_refuses_a_backend_that_drops_the_spec(capture):
    srv, _ = capture
    plain = sgl.RuntimeEndpoint(f"http://127.0.0.1:{srv.server_address[1]}")
    assert plain.chat_template.name != "chatml"  # Rio's model path matches no DSL template
    assert rio.use_chatml(plain).chat_template.name == "chatml"
    # Unthreaded, the executor raises in the caller (threaded, it lands in state.error()).
    with pytest.raises(TypeError, match="RioEndpoint"):
        bad_program.run(reasoning="latent", backend=plain, use_thread=False)
    assert srv.bodies == []

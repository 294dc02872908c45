"""About 300 generated bad requests against the real CPU server: each is a 4xx (never a 5xx, never
a dropped connection), the server process is the same afterwards, and a canary request answers
the same tokens and reasoning statistics after the run as before it.

Requests are built from tables (bad values per field, bad JSON bytes, bad images) and sent to
`/generate`, `/v1/completions` and `/v1/chat/completions`, streaming and not; the seed picks the
endpoint and streaming mode of each spec row. Refusals happen before the scheduler, so the run
costs next to no generation.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psutil
import pytest
import requests
from PIL import Image

from rio_sglang.reasoning.spec import INT_BOUNDS, SPEC_KEY

pytestmark = pytest.mark.server
SEED = 14
V, CONTEXT = 512, 4096  # the tiny checkpoint's vocabulary and context length (asserted below)
IDS = [20, 30, 40]
JSON_INVALID = "JSON decode error"  # SGLang's 400 for a body its strict JSON parser refuses
NAN, INF = float("nan"), float("inf")  # sent as the JSON tokens NaN / Infinity
CANARY = {"input_ids": [21, 31, 41, 51], "sampling_params": {
    "max_new_tokens": 4, "temperature": 0,
    "custom_params": {SPEC_KEY: {"mode": "switch", "window": 1, "math_tokens_explicit": False}}}}


@dataclass(frozen=True)
class Bad:
    label: str
    path: str
    body: bytes
    stream: bool
    names: str | None = None  # a spec row's: what its 400 names (`named`)
    twin: bytes | None = None  # a spec row's: the same request with a valid spec (served)


def deep(levels: int) -> dict:
    node: dict = {}
    for _ in range(levels):
        node = {"a": node}
    return node


def named(field: str, value=0) -> str:
    """What a spec row's 400 must name: the field; where the value is NaN or +-Infinity, the
    body's JSON itself (SGLang's strict parser refuses those tokens before any field is read)."""
    if isinstance(value, float) and not math.isfinite(value):
        return JSON_INVALID
    return f"custom_params.{SPEC_KEY}.{field}:"


def spec_values() -> list[tuple[str, object, str, dict]]:
    """(label, spec, what its 400 names, a valid twin) rows: every integer field at
    low - 1, high + 1, past the context or the vocabulary, and at int32 / int64 edges; wrong
    types; fields of another mode; unknown keys. The twin differs only where the row is bad,
    and is served: a row refused for another reason than its own cannot pass."""
    rows = []
    effective = {"soft_topk": V, **{f: CONTEXT for f in ("window", "termination_budget",
                                                         "thinking_budget", "cold_stop_steps")}}
    for name, (low, high) in INT_BOUNDS.items():
        mode = "latent" if name == "cold_stop_steps" else "switch"
        extra = {"cold_stop_threshold": 0.5} if name == "cold_stop_steps" else {}
        values = [low - 1, high + 1, 2**31, 2**40, 2**63, 2**64, -(2**63), 1.5, "7", True, [1]]
        if name in effective:
            values.append(effective[name] + 1)
        for value in values:
            rows.append((f"{name}={value!r}"[:40], {"mode": mode, name: value, **extra},
                         named(name), {"mode": mode, name: low, **extra}))
    for name in ("alpha0", "beta0"):
        for value in (-0.01, 1.01, NAN, INF, -INF, "0.5", None):
            rows.append((f"{name}={value!r}", {"mode": "switch", name: value},
                         named(name, value), {"mode": "switch", name: 0.5}))
    cold = {"mode": "latent", "cold_stop_steps": 2}
    rows += [
        ("mode=bogus", {"mode": "bogus"}, named("mode"), {"mode": "switch"}),
        ("mode=3", {"mode": 3}, named("mode"), {"mode": "latent"}),
        ("mode=list", {"mode": ["x"]}, named("mode"), {"mode": "explicit"}),
        ("math=1", {"math_tokens_explicit": 1}, named("math_tokens_explicit"),
         {"math_tokens_explicit": False}),
        ("cold=nan", {**cold, "cold_stop_threshold": NAN}, named("cold_stop_threshold", NAN),
         {**cold, "cold_stop_threshold": 0.5}),
        ("cold=-1", {**cold, "cold_stop_threshold": -1}, named("cold_stop_threshold"),
         {**cold, "cold_stop_threshold": 0}),
        ("cold half", cold, named("cold_stop_threshold"), {**cold, "cold_stop_threshold": 1.5}),
        ("latent+max_switches", {"mode": "latent", "max_switches": 2}, named("max_switches"),
         {"mode": "switch", "max_switches": 2}),
        ("explicit+budget", {"mode": "explicit", "thinking_budget": 4}, named("thinking_budget"),
         {"mode": "latent", "thinking_budget": 4}),
        ("unknown key", {"mode": "switch", "surprise": 1}, named("surprise"), {"mode": "switch"}),
        ("long unknown key", {"x" * 5000: 1}, named("x" * 64), {}),
        ("deep value", {"mode": deep(200)}, named("mode"), {"mode": "switch"}),
    ]
    return rows + [(f"spec={label}", spec, named(SPEC_KEY), {"mode": "latent"})
                   for label, spec in (("list", []), ("str", "switch"), ("null", None))]


def refusal_problem(status: int, text: str, names: str | None) -> str | None:
    """What is wrong with a bad request's answer, or None: it must be a 4xx, and a spec row's
    must name what `named` says (its field, or the body's JSON)."""
    if not 400 <= status < 500:
        return f"status {status}"
    if names is not None and names not in text:
        return f"does not name {names}"
    return None


SAMPLING = [  # (label, sampling params refused before the scheduler)
    ("max_new=-1", {"max_new_tokens": -1}), ("max_new=2^40", {"max_new_tokens": 2**40}),
    ("max_new>ctx", {"max_new_tokens": CONTEXT}), ("max_new=str", {"max_new_tokens": "2"}),
    ("temperature=-1", {"temperature": -1}), ("temperature=nan", {"temperature": NAN}),
    ("top_p=1.5", {"top_p": 1.5}), ("top_p=0", {"top_p": 0}), ("top_k=-2", {"top_k": -2}),
    ("top_k=2^30+1", {"top_k": 2**30 + 1}), ("top_k=2^31", {"top_k": 2**31}),
    ("min_p=2", {"min_p": 2}), ("rep_penalty=-1", {"repetition_penalty": -1}),
    ("freq_penalty=3", {"frequency_penalty": 3}), ("presence=-3", {"presence_penalty": -3}),
    ("min_new>max", {"min_new_tokens": 5, "max_new_tokens": 2}),
    ("min_new=2^31", {"min_new_tokens": 2**31, "max_new_tokens": None}),
    ("stop_ids=-1", {"stop_token_ids": [-1], "min_new_tokens": 1}),
    ("stop_ids=V", {"stop_token_ids": [V], "min_new_tokens": 1}),
    ("stop_ids=2^64", {"stop_token_ids": [2**64]}), ("logit_bias key", {"logit_bias": {"x": 1}}),
    ("logit_bias id", {"logit_bias": {str(V): 1}}), ("logit_bias value", {"logit_bias": {"1": "x"}}),
    ("regex=(", {"regex": "("}), ("json_schema", {"json_schema": "{not json"}),
    ("unknown", {"surprise": 1}), ("seed=2^70", {"sampling_seed": 2**70}),
    ("n=10^9", {"n": 10**9}),
]
OPENAI_SAMPLING = [  # (label, OpenAI fields refused before the scheduler)
    ("max_tokens=-1", {"max_tokens": -1}), ("temperature=-1", {"temperature": -1}),
    ("top_p=2", {"top_p": 2}), ("top_k=2^31", {"top_k": 2**31}), ("min_tokens=2^31", {
        "min_tokens": 2**31}), ("stop_ids=V", {"stop_token_ids": [V], "min_tokens": 1}),
    ("logprobs=10^6", {"logprobs": 10**6}), ("logit_bias", {"logit_bias": {"1": "x"}}),
    ("n=10^9", {"n": 10**9}),
    ("response_format=str", {"response_format": "json"}), ("regex=(", {"regex": "("}),
    ("bad json schema", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "bogus"}}}}),
]
TOP = [  # (label, top-level /generate fields refused before the scheduler)
    ("top_logprobs=10^6", {"return_logprob": True, "top_logprobs_num": 10**6}),
    ("top_logprobs=-1", {"return_logprob": True, "top_logprobs_num": -1}),
    ("token_ids_logprob", {"return_logprob": True, "token_ids_logprob": [V]}),
    ("rid list", {"rid": ["a", "b"]}), ("batch mismatch", {"input_ids": [IDS, IDS],
                                                         "sampling_params": [{}]}),
    ("input_embeds", {"input_ids": None, "input_embeds": [[0.5]]}),
]
INPUT_IDS = [  # (label, prompt ids)
    ("id=V", [V]), ("id=-1", [-1]), ("id=1e12", [10**12]), ("id=2^63", [2**63]),
    ("id=2^64", [2**64]), ("id=-2^63-1", [-(2**63) - 1]), ("id=1.5", [1.5]), ("id=null", [None]),
    ("id=nested", [[1, [2]]]), ("batch bad", [IDS, [V]]), ("empty", []),
    ("huge valid", [7] * (3 * CONTEXT)), ("huge bad", [V] * 20000),
]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()  # a broken PNG


def valid_png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()



IMAGES = [
    ("not base64", "data:image/png;base64,!!!!"), ("broken png", f"data:image/png;base64,{PNG}"),
    ("text bytes", "data:image/png;base64," + base64.b64encode(b"hello").decode()),
    ("local file", "/etc/hostname"), ("file url", "file:///etc/hostname"), ("empty", ""),
]
RAW = [  # (label, body bytes) for every endpoint
    ("NaN token", b'{"input_ids": [1], "sampling_params": {"temperature": NaN}}'),
    ("Infinity token", b'{"input_ids": [1], "sampling_params": {"top_p": Infinity}}'),
    ("truncated", b'{"input_ids": [1, 2'), ("empty body", b""), ("array body", b"[1, 2]"),
    ("number body", b"5"), ("non-utf8", b'{"text": "\xff\xfe\xfa"}'), ("binary", b"\xff" * 64),
    ("deep json", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("deep array", b"[" * 100000 + b"]" * 100000),
]
GENERATE, COMPLETIONS, CHAT = "/generate", "/v1/completions", "/v1/chat/completions"


def dumps(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def generate_body(sp: dict | None = None, **top) -> dict:
    return {"input_ids": IDS, "sampling_params": {"max_new_tokens": 2, **(sp or {})}, **top}


def openai_body(path: str, **top) -> dict:
    prompt = {"prompt": IDS} if path == COMPLETIONS else {
        "messages": [{"role": "user", "content": "hi"}]}
    return {"model": "default", "max_tokens": 2, **prompt, **top}


def image_bodies(url: str, stream: bool) -> list[tuple[str, dict]]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}]
    return [(GENERATE, {"text": "<|vision_start|><|image_pad|><|vision_end|>hi",
                        "image_data": url, "sampling_params": {"max_new_tokens": 2},
                        "stream": stream}),
            (CHAT, openai_body(CHAT, messages=[{"role": "user", "content": content}],
                               stream=stream))]


def spec_body(path: str, spec, stream: bool) -> dict:
    custom = {SPEC_KEY: spec}
    return generate_body({"custom_params": custom}, stream=stream) if path == GENERATE \
        else openai_body(path, custom_params=custom, stream=stream)


def bad_requests(rng: random.Random) -> list[Bad]:
    """Every table row once or more; where a row fits several endpoints or both streaming
    modes, the seed picks (spec rows) or all are sent (ids, images, raw bytes)."""
    out = []
    for label, spec, names, twin in spec_values():
        path, stream = rng.choice((GENERATE, COMPLETIONS, CHAT)), rng.random() < 0.5
        out.append(Bad(f"spec {label}", path, dumps(spec_body(path, spec, stream)), stream, names,
                       dumps(spec_body(path, twin, stream))))
    for stream in (False, True):
        out += [Bad(f"sampling {label}", GENERATE, dumps(generate_body(sp, stream=stream)), stream)
                for label, sp in SAMPLING]
        out += [Bad(f"openai {label}", path, dumps(openai_body(path, **fields, stream=stream)),
                    stream) for label, fields in OPENAI_SAMPLING for path in (COMPLETIONS, CHAT)
                if path == CHAT or label not in ("response_format=str", "bad json schema")]
        out += [Bad(f"top {label}", GENERATE, dumps({**generate_body(stream=stream), **fields}),
                    stream) for label, fields in TOP]
        for label, ids in INPUT_IDS:
            out.append(Bad(f"ids {label}", GENERATE,
                           dumps({**generate_body(stream=stream), "input_ids": ids}), stream))
            out.append(Bad(f"ids {label}", COMPLETIONS,
                           dumps(openai_body(COMPLETIONS, prompt=ids, stream=stream)), stream))
        out += [Bad(f"image {label}", path, dumps(body), stream)
                for label, url in IMAGES for path, body in image_bodies(url, stream)]
        out += [Bad(f"image with ids {ids}", GENERATE, dumps({
            **generate_body(stream=stream), "input_ids": ids, "image_data": valid_png()}), stream)
            for ids in ([V, 20], [20, 10**12], [-1])]
        out += [Bad("bad role", CHAT, dumps(openai_body(
            CHAT, messages=[{"role": "wizard", "content": "hi"}], stream=stream)), stream)]
    out += [Bad(f"raw {label}", path, body, False)
            for label, body in RAW for path in (GENERATE, COMPLETIONS, CHAT)]
    return out


def post(server, bad: Bad, body: bytes | None = None, timeout: float = 120) -> requests.Response:
    """Send `bad` (or `body` to its path: its valid twin)."""
    return requests.post(server.url + bad.path, data=bad.body if body is None else body,
                         timeout=timeout, headers={"Content-Type": "application/json"})


def canary(server) -> tuple[list[int], dict]:
    r = requests.post(server.url + GENERATE, json=CANARY, timeout=300)
    assert r.status_code == 200, r.text[:300]
    out = r.json()
    return out["output_ids"], out["meta_info"]["rio_reasoning"]


def processes(server) -> set[int]:
    """The server's process and every SGLang process under it (scheduler, detokenizer)."""
    root = psutil.Process(server.proc.pid)
    return {root.pid} | {p.pid for p in root.children(recursive=True)}


def test_the_reported_killers_are_400_naming_the_field(server):
    for body, names in [
        (generate_body({"custom_params": {SPEC_KEY: {"mode": "switch", "window": 2**40}}}),
         [f"{SPEC_KEY}.window", str(2**24), str(2**40)]),
        ({**generate_body(), "input_ids": [10**12]}, ["input_ids", str(10**12)]),
        ({**generate_body(), "input_ids": [5, -1]}, ["input_ids[1]", "-1"]),
    ]:
        r = requests.post(server.url + GENERATE, json=body, timeout=120)
        assert r.status_code == 400 and all(n in r.text for n in names), (r.status_code, r.text)
    assert requests.post(server.url + GENERATE, json=generate_body(), timeout=300).ok


@pytest.mark.parametrize("path", [GENERATE, CHAT])
def test_a_good_stream_still_streams(server, path):
    """Streams start before their status now: a valid one still gets 200, its chunks, [DONE]."""
    body = generate_body(stream=True) if path == GENERATE else openai_body(path, stream=True)
    r = requests.post(server.url + path, json=body, timeout=300)
    events = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert r.status_code == 200 and events[-1] == "data: [DONE]", (r.status_code, r.text[:300])
    assert len(events) >= 3 and '"error"' not in r.text, r.text[:300]


def test_bad_requests_are_4xx_and_the_server_lives_on(server):
    info = requests.get(server.url + "/v1/models", timeout=30).json()["data"][0]
    assert info["max_model_len"] == CONTEXT
    before, pids = canary(server), processes(server)
    rng = random.Random(SEED)
    bads = bad_requests(rng)
    print(f"fuzz seed {SEED}: {len(bads)} bad requests")
    assert 250 <= len(bads) <= 400
    wrong = []
    for bad in bads:
        try:
            r = post(server, bad)
        except requests.ConnectionError as e:
            wrong.append((bad.label, bad.path, bad.stream, f"connection: {e}"))
            continue
        problem = refusal_problem(r.status_code, r.text, bad.names)
        if problem:
            wrong.append((bad.label, bad.path, bad.stream, problem, r.text[:160]))
    assert not wrong, (f"seed {SEED}", wrong, server.log_tail(30))
    # One request per distinct twin (rows of one field share theirs: {"window": 1} for each bad
    # window sent the same way).
    twins = list({(bad.path, bad.twin): bad for bad in bads if bad.twin is not None}.values())
    print(f"{len(twins)} distinct valid twins")
    with ThreadPoolExecutor(8) as pool:  # batched by the scheduler: 8 running requests
        served = list(pool.map(lambda bad: served_problem(server, bad), twins))
    unserved = [(bad.label, bad.path, bad.stream, p) for bad, p in zip(twins, served) if p]
    assert not unserved, (f"seed {SEED}: valid twins of spec rows not served", unserved)
    assert processes(server) == pids
    assert canary(server) == before


def served_problem(server, bad: Bad) -> str | None:
    """None where `bad`'s valid twin is answered 200 (a stream: its chunks, then [DONE])."""
    r = post(server, bad, bad.twin, timeout=600)
    if r.status_code != 200:
        return f"{r.status_code}: {r.text[:200]}"
    if bad.stream and (not r.text.rstrip().endswith("data: [DONE]") or '"error"' in r.text):
        return f"stream: {r.text[-200:]}"
    return None


def test_a_token_id_completion_is_served(server):
    """/v1/completions takes a prompt of token ids (the body every completions row builds on)."""
    r = requests.post(server.url + COMPLETIONS, json=openai_body(COMPLETIONS), timeout=300)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["usage"]["prompt_tokens"] == len(IDS)
    assert r.json()["usage"]["completion_tokens"] == 2


WINDOW = named("window")
REFUSALS = [  # (status, body, names, problem or None): the verdict's own table, planted faults
    (400, f"custom_params.{SPEC_KEY}.window: must lie in [1, 16777216]", WINDOW, None),
    (400, f"custom_params.{SPEC_KEY}.mode: must be one of", WINDOW, "does not name"),
    (400, f"custom_params.{SPEC_KEY}.windows: unknown key", WINDOW, "does not name"),
    (400, f"'msg': '{JSON_INVALID}'", WINDOW, "does not name"),
    (400, f"'msg': '{JSON_INVALID}'", named("alpha0", NAN), None),
    (400, "max_new_tokens: must be >= 0", WINDOW, "does not name"),
    (422, "input_ids: not a list", None, None),
    (500, f"custom_params.{SPEC_KEY}.window: oops", WINDOW, "status 500"),
    (200, "{}", None, "status 200"),
]


@pytest.mark.parametrize("status,text,names,problem", REFUSALS)
def test_refusal_verdict(status, text, names, problem):
    got = refusal_problem(status, text, names)
    assert (got is None) if problem is None else (got is not None and got.startswith(problem))

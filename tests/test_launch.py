"""launch/: flag files parse with SGLang's own parser, the YaRN override reaches SGLang's rotary
embedding as transformers computes it, and launch/recipe.sh cpu-tiny (`rio-sglang serve --target
cpu-tiny`) + launch/smoke.py run against a real server (the memory calculator: test_launch_memory.py)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from one_ahead import OneAhead

from launch.memory import RIO_CONFIG
from rio_sglang import sglang_server
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.targets import TargetError, read_target, server_args, server_env, target_names

ROOT = Path(__file__).resolve().parents[1]
CFG = json.loads(RIO_CONFIG.read_text())
NODE_ENV = {"NODE_RANK": "1", "DIST_INIT_ADDR": "10.0.0.1:5000"}

# What each target must turn into, read back from SGLang's ServerArgs (one row per target).
EXPECTED = {
    "h200x8": {"tp_size": 8, "pp_size": 1, "nnodes": 1, "dtype": "bfloat16",
               "attention_backend": "flashinfer", "context_length": None},
    "h100x16-2node": {"tp_size": 8, "pp_size": 2, "nnodes": 2, "node_rank": 1,
                      "dist_init_addr": "10.0.0.1:5000", "attention_backend": "flashinfer"},
    "long-context": {"tp_size": 8, "pp_size": 1, "context_length": 1_048_576,
                     "attention_backend": "flashinfer"},
    "h100x8-fp8": {"tp_size": 8, "pp_size": 1, "nnodes": 1, "dtype": "bfloat16",
                   "quantization": "fp8", "attention_backend": "flashinfer"},
    "cpu-tiny": {"device": "cpu", "dtype": "float16", "attention_backend": "torch_native",
                 "tp_size": 1, "max_total_tokens": 2048},
}


def test_every_target_has_expectations():
    assert sorted(EXPECTED) == target_names()


def parse(argv: list[str]):
    """SGLang's own `launch_server` parsing (no resolution: that needs an accelerator)."""
    import logging

    from sglang.srt.server_args import prepare_server_args

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return prepare_server_args(argv)
    finally:  # it calls logging.basicConfig(force=True): give pytest its handlers back
        root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_flags_parse_into_server_args(name):
    target = read_target(name, NODE_ENV)
    parsed = parse(server_args(target, "/models/rio"))
    assert parsed.model_path == "/models/rio"
    assert (parsed.reasoning_parser, parsed.tool_call_parser) == ("qwen3", "qwen3_coder")
    for field, want in EXPECTED[name].items():
        assert getattr(parsed, field) == want, field
    override = parsed.json_model_override_args
    if name == "long-context":
        rope = json.loads(override)["text_config"]["rope_parameters"]
        assert (rope["rope_type"], rope["factor"], rope["original_max_position_embeddings"]) == \
            ("yarn", 4.0, 262_144)


def test_extra_args_come_last_and_win():
    argv = server_args(read_target("h200x8"), "/m", ["--tp-size", "4", "--port", "31000"])
    parsed = parse(argv)
    assert (parsed.tp_size, parsed.port) == (4, 31000)


def test_cpu_tiny_is_the_measured_cpu_setup():
    target = read_target("cpu-tiny")
    assert target.args == sglang_server.CPU_FLAGS  # one setup, not two drifting copies
    assert target.tiny and target.on_cpu
    env = server_env(target, {})
    assert env == {**sglang_server.cpu_env({}), "SGLANG_EXTERNAL_MODEL_PACKAGE": "rio_sglang.models"}


def test_gpu_targets_serve_our_package_and_name_their_gpu():
    for name in ("h200x8", "h100x16-2node", "long-context", "h100x8-fp8"):
        target = read_target(name, NODE_ENV)
        assert server_env(target, {})["SGLANG_EXTERNAL_MODEL_PACKAGE"] == "rio_sglang.models"
        assert target.gpu in ("h200", "h100") and not target.tiny
    assert read_target("long-context").env == {"SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN": "1"}


def test_unset_variable_and_unknown_target_are_named():
    with pytest.raises(TargetError, match=r"NODE_RANK\} is not set"):
        read_target("h100x16-2node", {})
    with pytest.raises(TargetError, match="unknown target 'h9000'"):
        read_target("h9000")


# Long context: the override, through SGLang's config loader and rotary factory

YARN_PROBE = r"""
import json, sys, pathlib, torch
from sglang.srt.utils.hf_transformers.config import get_config
from sglang.srt.utils.hf_transformers.common import get_context_length, get_rope_config
from sglang.srt.layers.rotary_embedding import get_rope
from transformers import Qwen3_5MoeConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
cfg_json, override, d = json.loads(sys.argv[1]), json.loads(sys.argv[2]), pathlib.Path(sys.argv[3])
(d / "config.json").write_text(json.dumps(cfg_json))
text = get_config(str(d), trust_remote_code=False, model_override_args=override).text_config
theta, rope = get_rope_config(text)
emb = get_rope(head_size=text.head_dim, rotary_dim=text.head_dim, base=theta, rope_scaling=rope,
               max_position=text.max_position_embeddings, is_neox_style=True,
               partial_rotary_factor=text.partial_rotary_factor, dtype=torch.float32)
cfg_json["text_config"]["rope_parameters"] = override["text_config"]["rope_parameters"]
hf = Qwen3_5MoeConfig.from_dict(cfg_json).text_config
inv, scale = ROPE_INIT_FUNCTIONS["yarn"](hf, "cpu")
pos = torch.tensor([0, 262_143, 262_144, 700_001, 1_048_575])
angles = pos[:, None].float() * inv[None].float()
want = torch.cat([angles.cos() * scale, angles.sin() * scale], -1)
print(json.dumps({"class": type(emb).__name__, "cache_rows": emb.cos_sin_cache.shape[0],
                  "derived_context": get_context_length(text),
                  "inv_freq_diff": (emb._compute_inv_freq(emb.scaling_factor) - inv).abs().max()
                  .item(),
                  "cos_sin_diff": (emb.cos_sin_cache[pos] - want).abs().max().item(),
                  "mscale": emb.mscale, "attention_factor": scale}))
"""


def test_long_context_yarn_matches_transformers_beyond_native_positions(tmp_path):
    target = read_target("long-context")
    override = target.flag("--json-model-override-args")
    # Process-wide SGLang platform state (our CPU platform builds the rotary table): a child.
    env = {**os.environ, "RIO_CPU_PLATFORM": "1"}
    out = subprocess.run([sys.executable, "-c", YARN_PROBE, json.dumps(CFG), override,
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["class"] == "YaRNScalingMRotaryEmbedding"
    assert got["cache_rows"] == 1_048_576 == int(target.flag("--context-length"))
    assert got["inv_freq_diff"] == 0.0 and got["cos_sin_diff"] < 1e-6
    assert got["mscale"] == pytest.approx(got["attention_factor"]) == pytest.approx(
        0.1 * math.log(4.0) + 1.0)
    # SGLang derives 262,144 from the config: the longer context needs the env override.
    assert got["derived_context"] == 262_144
    assert target.env["SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN"] == "1"


# The real thing on this CPU

# The cpu-tiny server below runs with this default: requests without a spec get it.
DEFAULT_SPEC = {"mode": "switch", "max_switches": 2, "math_tokens_explicit": False}


SERVE_SH = "test_serve_sh_cpu_tiny_answers_the_smoke_client"


@pytest.fixture(scope="module", autouse=True)
def serve_sh_starts(request, tmp_path_factory):
    """`recipe.sh cpu-tiny` starts as this module begins: its start overlaps the tests above."""
    def start(_):
        tmp = tmp_path_factory.mktemp("serve-sh")
        port = sglang_server.free_port()
        env = {**os.environ, "RIO_CACHE_DIR": str(tmp / "cache"), "RIO_VENV": sys.prefix,
               "RIO_REASONING_DEFAULT": json.dumps(DEFAULT_SPEC)}
        with (tmp / "serve.log").open("w") as out:
            proc = subprocess.Popen(["bash", str(ROOT / "launch" / "recipe.sh"), "cpu-tiny",
                                     "--port", str(port), "--enable-metrics"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        # recipe.sh execs `rio-sglang serve`, which keeps SGLang's output in RIO_CACHE_DIR/logs
        # and stops SGLang's process group when Server.stop sends it SIGTERM.
        log = tmp / "cache" / "logs" / f"server-{port}.log"
        return (sglang_server.Server(f"http://127.0.0.1:{port}", proc, log), tmp)

    starts = OneAhead(request, start, then=(SERVE_SH,))
    starts.start_first()
    yield starts
    starts.stop()


@pytest.mark.server
def test_serve_sh_cpu_tiny_answers_the_smoke_client(serve_sh_starts):
    srv, tmp_path = serve_sh_starts.take(SERVE_SH)
    url, log = srv.url, srv.log_path
    try:
        srv.wait_ready(timeout=300)
        report = tmp_path / "smoke.json"
        smoke = subprocess.run([sys.executable, str(ROOT / "launch" / "smoke.py"), url,
                                "--json", str(report), "--server-log", str(log)],
                               capture_output=True, text=True, timeout=600, check=False)
        assert report.exists(), smoke.stdout + smoke.stderr
        rows = {r["name"]: r for r in json.loads(report.read_text())}
        tail = smoke.stdout + "\n" + srv.log_tail(30)
        names = ("server", "parsers", "our model class", "reasoning: explicit",
                 "reasoning: latent", "reasoning: switch", "image")
        for name in names:
            assert rows[name]["ok"], f"{name}: {rows[name]['detail']}\n{tail}"
        assert smoke.returncode == 0, tail
        assert_default_applies(url)
        assert_metrics_add_up(url)
    finally:
        srv.stop()


def scrape(url: str) -> dict[tuple, float]:
    """/metrics as {(name, sorted label pairs): value}."""
    import requests

    r = requests.get(f"{url}/metrics", timeout=60)
    assert r.status_code == 200, r.text[:300]
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def delta(before: dict, after: dict, name: str, **labels) -> float:
    """The change of one series (summed over the labels not given)."""
    def total(d):
        return sum(v for (n, ls), v in d.items() if n == name
                   and all((k, str(x)) in ls for k, x in labels.items()))
    return total(after) - total(before)


# The mix the metrics test sends: (spec or None for the server default, status)
METRICS_MIX = [
    ({"mode": "explicit"}, 200),
    ({"mode": "latent", "math_tokens_explicit": False}, 200),
    ({"mode": "switch", "window": 1, "max_switches": 1, "math_tokens_explicit": False}, 200),
    (None, 200),  # DEFAULT_SPEC
    ({"mode": "switch", "window": 0}, 400),  # refused, naming `window`
]
GRAFANA = ROOT / "launch" / "grafana" / "rio-reasoning.json"


def aborted_latent(url: str) -> dict:
    """A long latent request, aborted once it streams: its last output's meta_info."""
    import requests

    rid = "rio-metrics-abort"
    body = {"input_ids": [20, 30, 40, 50], "rid": rid, "stream": True, "sampling_params": {
        "max_new_tokens": 1000, "ignore_eos": True, "temperature": 0,
        "custom_params": {"rio_reasoning": {"mode": "latent", "math_tokens_explicit": False}}}}
    last = None
    with requests.post(f"{url}/generate", json=body, stream=True, timeout=600) as r:
        assert r.status_code == 200, r.text[:300]
        for i, line in enumerate(r.iter_lines()):
            if line.startswith(b"data: {"):
                last = json.loads(line[len(b"data: "):])
            if i == 2:
                assert requests.post(f"{url}/abort_request", json={"rid": rid},
                                     timeout=60).status_code == 200
    return last["meta_info"]


def assert_metrics_add_up(url: str) -> None:
    """--enable-metrics: each rio_reasoning_ counter moves by exactly what the mix's responses
    say; the Grafana dashboard's queries name only series this server exposes."""
    import requests

    before = scrape(url)
    returned = []
    for spec, status in METRICS_MIX:
        sp = {"max_new_tokens": 12, "temperature": 0}
        if spec is not None:
            sp["custom_params"] = {"rio_reasoning": spec}
        r = requests.post(f"{url}/generate", json={"input_ids": [20, 30, 40], "sampling_params": sp},
                          timeout=600)
        assert r.status_code == status, r.text[:300]
        if status == 200:
            returned.append(r.json()["meta_info"]["rio_reasoning"])
    meta = aborted_latent(url)
    assert meta["finish_reason"]["type"] == "abort"
    returned.append(meta["rio_reasoning"])
    after = scrape(url)

    def series(name, **labels):
        return delta(before, after, f"rio_reasoning_{name}", **labels)

    for mode in ("explicit", "latent", "switch"):
        for default in (True, False):
            n = sum(s["spec"]["mode"] == mode and s["from_default"] is default for s in returned)
            assert series("requests_total", mode=mode, from_default=str(default).lower()) == n
    for key in ("latent_steps", "explicit_steps"):
        assert series(f"{key}_total") == sum(s[key] for s in returned) > 0
    assert series("latent_steps_per_request_count") == len(returned) == 5
    assert series("latent_steps_per_request_sum") == sum(s["latent_steps"] for s in returned)
    assert series("switches_per_request_sum") == sum(s["switches"] for s in returned)
    for key in ("injected_convergence", "injected_termination", "forced_think_end"):
        assert series(f"{key}_total") == sum(s[key] for s in returned)
    assert series("injected_convergence_total") >= 1
    assert series("refused_total", field="window") == series("refused_total") == 1
    assert series("aborted_mid_latent_total") == 1
    assert meta["rio_reasoning"]["modes"].endswith("L")

    seen = {name for name, _ in after}
    queries = [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p["targets"]]
    named = {m for q in queries for m in re.findall(r"\b(rio_reasoning_\w+|sglang:\w+)", q)}
    assert named and named <= seen, sorted(named - seen)


def chat_stats(url: str, **extra) -> dict:
    """A plain OpenAI chat request (what lm-eval sends), its `rio_reasoning` statistics."""
    import requests

    body = {"model": "default", "messages": [{"role": "user", "content": "2+2?"}],
            "max_tokens": 4, "temperature": 0, **extra}
    r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text[:300]
    return r.json()["metadata"]["rio_reasoning"]


def assert_default_applies(url: str) -> None:
    """No custom_params: the server's default spec runs and says so; a request's own spec
    (explicit) replaces it whole."""
    stats = chat_stats(url)
    assert stats["from_default"] is True
    assert stats["spec"] == {**ReasoningSpec().to_json(), **DEFAULT_SPEC}
    assert stats["latent_steps"] > 0 and "L" in stats["modes"]
    stats = chat_stats(url, custom_params={"rio_reasoning": {"mode": "explicit"}})
    assert stats["from_default"] is False and stats["spec"]["mode"] == "explicit"
    assert stats["latent_steps"] == 0 and stats["modes"] == "EEEE"


# how the default is given, default spec, what it must say; each stops before any work
BAD_DEFAULTS = [
    ("--reasoning-default", '{"mode": "switch", "window": 0}',
     "window: must lie in [1, 16777216], got 0"),
    ("RIO_REASONING_DEFAULT", '{"mode": "latent", "max_switches": 2}',
     "max_switches: applies to mode 'switch'"),
    ("RIO_REASONING_DEFAULT", '{"mode": "swtich"}', "mode: must be one of"),
    ("--reasoning-default", "switch", "not JSON"),
]


@pytest.mark.parametrize("source,spec,message", BAD_DEFAULTS,
                         ids=[f"{s}-{m.split(':')[0]}" for s, _, m in BAD_DEFAULTS])
def test_bad_default_stops_the_launcher_naming_the_field(tmp_path, source, spec, message):
    env = {**os.environ, "RIO_CACHE_DIR": str(tmp_path / "cache"), "RIO_VENV": sys.prefix}
    if source == "--reasoning-default":
        cmd = [sys.executable, "-m", "rio_sglang.cli", "serve", "--tiny", source, spec]
    else:  # launch/recipe.sh: from the environment (or a target's @env line)
        cmd, env[source] = ["bash", str(ROOT / "launch" / "recipe.sh"), "cpu-tiny"], spec
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"cannot serve: {source}" in out.stderr and message in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "cache" / "checkpoints").exists()  # stopped before any work

"""launch/: flag files parse with SGLang's own parser, the memory calculator matches a hand count,
the YaRN override reaches SGLang's rotary embedding as transformers computes it, and
launch/recipe.sh cpu-tiny + launch/smoke.py run against a real server."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from launch.memory import RIO_CONFIG, estimate, gdn_state_bytes_per_seq, kv_bytes_per_token
from launch.params import weights
from launch.recipe import TargetError, read_target, server_args, server_env, target_names
from rio_sglang import launcher
from rio_sglang.reasoning.spec import ReasoningSpec

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
    assert target.args == launcher.CPU_FLAGS  # one setup, not two drifting copies
    assert target.tiny and target.on_cpu
    env = server_env(target, {})
    assert env == {**launcher.cpu_env({}), "SGLANG_EXTERNAL_MODEL_PACKAGE": "rio_sglang.models"}


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


# The parameter table, checked against independent counts

def test_parameter_table_matches_the_checkpoint_metadata():
    facts = CFG["rio_checkpoint"]
    table = weights(CFG, mtp=True)
    assert sum(w.numel for w in table) == facts["tensor_parameters"]  # 403,397,928,944
    # BF16 everywhere but 8,640 F32 values: the index's total size to the byte.
    assert 2 * facts["tensor_parameters"] + 2 * facts["f32_values"] == facts["index_total_size"]


def test_parameter_table_matches_transformers_model():
    import torch
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3_5MoeForConditionalGeneration(Qwen3_5MoeConfig.from_dict(CFG))
    hf = {n: p.numel() for n, p in model.named_parameters()}
    ours = weights(CFG)  # transformers has no MTP head

    def hf_sum(part):
        return sum(v for n, v in hf.items() if part in n)

    assert sum(w.numel for w in ours) == sum(hf.values())
    assert sum(w.numel for w in ours if w.group == "vision") == hf_sum("visual.")
    for layer in (0, 3):  # a Gated DeltaNet layer, a full-attention layer
        assert sum(w.numel for w in ours if w.layer == layer) == hf_sum(f".layers.{layer}.")


def test_parameter_table_matches_a_generated_checkpoint(tmp_path):
    from rio_sglang.checkpoint import shard_header
    from rio_sglang.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path / "tiny", "tiny", seed=0)
    stored = sum(math.prod(t["shape"]) for shard in sorted(path.glob("*.safetensors"))
                 for t in shard_header(shard).values())
    assert sum(w.numel for w in weights(json.loads((path / "config.json").read_text()))) == stored


# Memory of h200x8 at 262,144 and 1,048,576 tokens, counted by hand from the config

H, V, E, I, IS = 4096, 248_320, 512, 1024, 1024  # hidden, vocab, experts, expert I, shared I
HQ, HKV, D = 32, 2, 256  # full attention: q heads, KV heads, head dim
HK, HV, DK, DV, K = 16, 64, 128, 128, 4  # Gated DeltaNet heads, head dims, conv kernel
TP, BF16, FP32 = 8, 2, 4


def h200x8_weights_by_hand() -> int:
    """Bytes on each of the 8 GPUs: elements split over TP count 1/8, replicated ones whole."""
    conv_dim = 2 * HK * DK + HV * DV  # [q | k | v] of a Gated DeltaNet layer
    C, CI, M, OUT = 1152, 4304, 1152 * 2 * 2, 4096  # vision width, MLP, merger input, output
    split = (2 * V * H  # embed_tokens, lm_head (248,320 rows = 8 x 31,040)
             + 60 * (E * 3 * I * H + 3 * IS * H)  # every layer: experts w13 + w2, shared expert
             + 15 * (2 * HQ * D * H + H * HQ * D)  # attention: q_proj [q | gate], o_proj
             + 45 * (conv_dim * H + HV * DV * H + 2 * HV * H + conv_dim * K + HV
                     + H * HV * DV)  # GDN: in_proj_qkv, _z, _b, _a, conv1d, dt_bias, out_proj
             + 27 * (3 * C * (C + 1) + C * C + CI * (C + 1) + C * CI)  # vision blocks
             + 2304 * C + M * (M + 1) + OUT * M)  # vision pos_embed, merger fc1, fc2
    whole = (H  # final norm
             + 60 * (2 * H + E * H + H)  # two norms, router, shared_expert_gate
             + 15 * (2 * D * H + 2 * D)  # k_proj, v_proj: one whole KV head each; q/k norms
             + 45 * DV  # GDN gated norm
             + C * 3 * 2 * 16 * 16 + C  # patch embedding and its bias
             + 27 * (4 * C + 2 * C)  # per block: two LayerNorms, proj and fc2 biases
             + 2 * C + OUT)  # merger LayerNorm, fc2 bias
    a_log = 45 * (HV // TP) * FP32  # SGLang keeps A_log in fp32
    return (split // TP + whole) * BF16 + a_log


@pytest.mark.parametrize("context", [262_144, 1_048_576])
def test_h200x8_memory_matches_hand_count(context):
    est = estimate(CFG, read_target("h200x8"), context=context, concurrency=1)
    (stage,) = est.stages
    kv_per_token = 15 * 2 * 1 * D * BF16  # 15 attention layers, K and V, one KV head per GPU
    # conv state [conv_dim / 8, K - 1] in bf16, SSM state [64 / 8, 128, 128] in fp32
    conv, ssm = (2 * HK * DK + HV * DV) // TP * (K - 1) * BF16, HV // TP * DK * DV * FP32
    state_per_seq = 45 * (conv + ssm)
    assert stage.weights == h200x8_weights_by_hand() == 99_472_735_116
    assert stage.kv_per_token == kv_per_token == 15_360
    assert stage.kv == kv_per_token * context  # 3.75 GiB at 262,144; 15 GiB at 1,048,576
    assert stage.state == state_per_seq == 24_007_680
    assert stage.latent_embed == 0  # each TP rank mixes the vocab shard it embeds with
    assert stage.total == stage.weights + stage.kv + stage.state + stage.latent_embed
    assert stage.total < est.gpu_bytes


def h100x8_fp8_by_hand() -> tuple[int, int]:
    """(weight bytes, fp32 scale bytes) on each of 8 GPUs under --quantization fp8: the bf16
    count less one byte per e4m3 element; experts scaled per 128 x 128 block of the I-shard,
    the other projections per output row; the router and shared_expert_gate stay bf16."""
    conv_dim = 2 * HK * DK + HV * DV
    experts = 60 * E * 3 * I * H // TP
    attn = 15 * (2 * HQ * D * H // TP + 2 * D * H + H * HQ * D // TP)  # k, v: one whole head
    gdn = 45 * (conv_dim * H + HV * DV * H + 2 * HV * H + H * HV * DV) // TP
    shared = 60 * 3 * IS * H // TP
    i_tp = I // TP  # 128: one block wide
    expert_scales = 60 * E * (2 * i_tp // 128 * H // 128 + H // 128 * i_tp // 128)
    row_scales = (15 * (2 * HQ * D // TP + 2 * D + H)  # q, k, v, o (row parallel: H rows)
                  + 45 * (conv_dim // TP + HV * DV // TP + 2 * HV // TP + H)
                  + 60 * (2 * IS // TP + H))  # shared gate_up, down
    return (h200x8_weights_by_hand() - (experts + attn + gdn + shared),
            (expert_scales + row_scales) * FP32)


def test_rio_in_fp8_fits_8_h100_at_native_context():
    target = read_target("h100x8-fp8")
    est = estimate(CFG, target, context=262_144)
    (stage,) = est.stages
    assert (stage.weights, stage.scales) == h100x8_fp8_by_hand() == (50_176_228_236, 14_441_280)
    assert stage.kv == 15 * 2 * D * BF16 * 262_144
    assert stage.total == stage.weights + stage.scales + stage.kv + stage.state + stage.latent_embed
    assert stage.total < 0.7 * est.gpu_bytes  # 52.4 of 79.6 GiB
    # The same node in bf16 does not hold the weights alone.
    bf16 = replace(target, args=tuple(a for a in target.args if a not in ("--quantization", "fp8")))
    assert estimate(CFG, bf16, context=262_144).stages[0].weights > est.gpu_bytes


def test_whole_model_cache_matches_the_model_facts():
    text = CFG["text_config"]
    assert kv_bytes_per_token(text, tp=1, attn_layers=15) == 30 * 1024  # "~30 KiB per token"
    assert gdn_state_bytes_per_seq(text, tp=1, gdn_layers=45) == 192_061_440  # "~183 MiB"


def test_pipeline_stages_hold_their_own_layers():
    est = estimate(CFG, read_target("h100x16-2node", NODE_ENV), context=262_144)
    assert [(s.layers, s.attn_layers, s.gdn_layers) for s in est.stages] == \
        [(range(30), 7, 23), (range(30, 60), 8, 22)]
    assert est.worst.kv_per_token == 8 * 2 * D * BF16
    # latent steps are mixed on the last stage: it alone copies rows, its rank's V/8 (242 MiB)
    assert [s.latent_embed for s in est.stages] == [0, -(-V // 8) * H * BF16]
    assert est.worst.total < est.gpu_bytes


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


@pytest.mark.server
def test_serve_sh_cpu_tiny_answers_the_smoke_client(tmp_path):
    port = launcher.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RIO_CACHE_DIR": str(tmp_path / "cache"), "RIO_VENV": sys.prefix,
           "RIO_REASONING_DEFAULT": json.dumps(DEFAULT_SPEC)}
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", str(ROOT / "launch" / "recipe.sh"), "cpu-tiny",
                                 "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    # recipe.sh execs into SGLang in its own session: Server.stop ends that process group.
    srv = launcher.Server(url, proc, log)
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
    finally:
        srv.stop()


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


# launcher (how it gets the default), default spec, what it must say; each stops before any work
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
        cmd = [sys.executable, "-m", "rio_sglang.quickstart", "--tiny", source, spec]
    else:  # launch/recipe.sh: from the environment (or a target's @env line)
        cmd, env[source] = ["bash", str(ROOT / "launch" / "recipe.sh"), "cpu-tiny"], spec
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"cannot serve: {source}" in out.stderr and message in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "cache" / "checkpoints").exists()  # stopped before any work

"""bench/: the real-width slice presets (written without weights), the decode-roofline bytes
checked by hand, and the CPU mode of bench/serve_bench.py end to end: our class and SGLang's
stock class both serve a config-only tiny checkpoint with `--load-format dummy`."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import FIGURES
from bench.roofline import decode_step_bytes
from launch.memory import RIO_CONFIG
from rio_sglang.logmarks import PLUGIN_MARK
from rio_sglang.tiny import PRESETS, write_tiny_checkpoint
from rio_sglang.tiny.writer import write_config_only

ROOT = Path(__file__).resolve().parents[1]


def test_rio_slice_is_real_width_and_written_without_weights(tmp_path):
    ckpt = write_config_only(tmp_path / "slice", "rio-slice-4")
    text = json.loads((ckpt / "config.json").read_text())["text_config"]
    rio = json.loads(RIO_CONFIG.read_text())["text_config"]
    same = ("hidden_size", "vocab_size", "num_experts", "num_experts_per_tok",
            "moe_intermediate_size", "shared_expert_intermediate_size", "num_attention_heads",
            "num_key_value_heads", "head_dim", "linear_num_key_heads", "linear_num_value_heads",
            "linear_key_head_dim", "linear_value_head_dim", "full_attention_interval")
    assert {k: text[k] for k in same} == {k: rio[k] for k in same}
    assert text["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    assert text["rope_parameters"]["mrope_section"] == [11, 11, 10]
    assert not list(ckpt.glob("*.safetensors*"))  # no shard, no index
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    ids = set(tok["model"]["vocab"].values()) | {t["id"] for t in tok["added_tokens"]}
    assert ids == set(range(248_320))  # BPE + specials + filler: exactly the embedding rows
    assert PRESETS["rio-slice-8"].layers == 8 and PRESETS["rio-slice-8"].config_only
    with pytest.raises(ValueError, match="config-only"):
        write_tiny_checkpoint(tmp_path / "no", "rio-slice-4")


def test_decode_step_bytes_by_hand():
    cfg = copy.deepcopy(json.loads(RIO_CONFIG.read_text()))
    cfg["text_config"]["num_hidden_layers"] = 4  # rio-slice-4: layers 0-2 GDN, layer 3 attention
    got = decode_step_bytes(cfg, context=1000)
    H, I, V, B = 4096, 1024, 248_320, 2
    assert got["experts"] == 4 * 10 * 3 * H * I * B  # 10 of 512 experts, gate+up+down
    assert got["shared_expert"] == 4 * (3 * H * I + H) * B
    assert got["router_and_norms"] == 4 * (512 * H + 2 * H) * B + H * B  # + the final norm
    assert got["lm_head"] == V * H * B and got["embedding_row"] == H * B
    assert got["attention"] == ((2 * 32 + 2 * 2) * 256 * H + H * 32 * 256 + 2 * 256) * B
    assert got["kv_cache"] == 1001 * 2 * 2 * 256 * B  # K and V, 2 heads, one layer
    conv = (2 * 16 * 128 + 64 * 128) * 3 * B
    assert got["gdn_state"] == 2 * 3 * (conv + 64 * 128 * 128 * 4)  # read + write, fp32 SSM


@pytest.mark.parametrize("I, T, bound", [
    (1024, 4096, "bytes"), (128, 4096, "bytes"),  # TP 1 / TP 8 prefill: the experts' bytes bind
    (1024, 16_384, "flops"), (128, 1, "bytes"),
])
def test_moe_roofline_by_hand(I, T, bound):
    """The MoE's roofline at Rio's shapes (E=512, top-10, H=4096, bf16) with an H100's measured
    figures (copy 3,000 GB/s, bf16 matmul ~800 TFLOP/s): at T=4096 every expert is hit and the
    bytes bind, which caps the rate near 240 TFLOP/s at TP 1 and TP 8 alike (below the 400 / 250
    of the MoE-kernel issue); at T=16,384 the tensor cores bind."""
    from rio_kernels.benchmark import roofline_ms
    from rio_kernels.fused_moe import moe_flops_bytes

    E, topk, H, ceiling, peak = 512, 10, 4096, 3000.0, 800.0
    flops, nbytes = moe_flops_bytes(T, H, I, E, topk, 2)
    e_hit = E * (1 - (1 - topk / E) ** T)
    assert flops == 6 * T * topk * H * I
    assert nbytes == pytest.approx(e_hit * 3 * H * I * 2 + 2 * T * H * 2 + 8 * T * topk)
    by_bytes, by_flops = nbytes / (ceiling * 1e9) * 1e3, flops / (peak * 1e12) * 1e3  # ms
    ms = roofline_ms(flops, nbytes, ceiling, peak)
    assert ms == pytest.approx(max(by_bytes, by_flops))
    assert (by_bytes > by_flops) == (bound == "bytes")
    if T == 4096:
        assert 225 < flops / ms / 1e9 < 245 and e_hit == pytest.approx(E)


class _Flags:
    FLAG = False


def _boom():
    raise RuntimeError("refused")


@pytest.mark.parametrize("value, fn, raises", [
    (True, lambda: _Flags.FLAG, None), (False, lambda: _Flags.FLAG, None),
    (True, _boom, RuntimeError),
])
def test_flag_set_restores_the_flag(value, fn, raises):
    """The benches' and the sm_90 compile check's opt-in switch: the flag holds `value` inside,
    and its old value after, whether the run returned or raised."""
    from rio_kernels.benchmark import flag_set

    for old in (False, True):
        _Flags.FLAG = old
        if raises:
            with pytest.raises(raises), flag_set(_Flags, "FLAG", value):
                fn()
        else:
            with flag_set(_Flags, "FLAG", value):
                assert fn() is value
        assert _Flags.FLAG is old


def test_step_bench_skips_a_failed_opt_in(monkeypatch, capsys):
    """bench_swir_step: an opt-in that raises is reported once, skipped after, and left
    off; one that runs returns its result with the flag on."""
    import rio_kernels.swir_step.bench_swir_step as bench
    from rio_kernels.swir_step import launch

    monkeypatch.setattr(bench, "_BROKEN", set())
    calls = []

    def failing():
        calls.append(launch.PDL)
        raise RuntimeError("refused")

    assert bench.opt_in("PDL", failing) is None
    assert bench.opt_in("PDL", failing) is None  # skipped: not run again
    assert calls == [True] and launch.PDL is False
    assert capsys.readouterr().out.count("PDL: FAILED") == 1
    assert bench.opt_in("COPY_LOGITS", lambda: launch.COPY_LOGITS) is True
    assert launch.COPY_LOGITS is False


@pytest.mark.gpu
def test_copy_bandwidth_is_measured():
    from bench.roofline import measure_copy_gbs

    assert measure_copy_gbs(nbytes=256 << 20, iters=5) > 100


@pytest.mark.server
def test_cpu_bench_both_servers_every_figure(tmp_path):
    out = tmp_path / "bench"
    environ = {**os.environ, "RIO_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "bench.serve_bench", "--cpu", "--out", str(out)],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "] ours c=1: 2 prompts" in done.stderr  # progress on the terminal
    report = json.loads((out / "report.json").read_text())
    rows = {(r["server"], r["mode"], r["concurrency"]): r for r in report["rows"]}
    expected = {(s, None, c) for s in ("ours", "stock") for c in (1, 2)}
    expected |= {("ours", m, c) for m in ("explicit", "latent", "switch") for c in (1, 2)}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["completed"] >= 2, key
        for figure in FIGURES:
            assert row[figure] is not None and row[figure] > 0, (key, figure)
    assert rows[("ours", "latent", 1)]["reasoning"]["latent_steps"] > 0
    for name in ("ours_over_stock", "latent_over_explicit", "switch_over_explicit"):
        assert set(report["ratios"][name]) == {"1", "2"}
        assert all(v > 0 for v in report["ratios"][name].values()), name
    for server in ("ours", "stock"):
        roof = report["roofline"][server]
        assert roof["bytes_per_step"] > 0 and roof["achieved_gbs"] > 0 and roof["step_ms"] > 0
        assert roof["fraction"] is None  # no bandwidth claim on a CPU
    assert report["device"]["kind"] == "cpu"
    assert "not a performance figure" in report["device"]["note"]
    assert report["checkpoint"]["weights"].startswith("random")
    ours_log, stock_log = ((out / f"server-{s}.log").read_text() for s in ("ours", "stock"))
    assert "rio-sglang model class serving" in ours_log
    assert "rio-sglang model class serving" not in stock_log
    # The plain server in the same virtualenv: our reasoning plugin loads in its processes but
    # installs nothing (tests/test_plugin_gate.py probes the hooked attributes themselves).
    assert f"{PLUGIN_MARK}: idle" in stock_log and f"{PLUGIN_MARK}: installed" not in stock_log
    assert f"{PLUGIN_MARK}: installed" in ours_log and f"{PLUGIN_MARK}: idle" not in ours_log
    assert "| stock | - | bench_serving | 2 |" in (out / "report.md").read_text()

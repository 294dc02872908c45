"""`rio_sglang.provenance blend` on generated tiny checkpoints: blends are found, non-blends and
replaced layers are named, missing / mismatched tensors listed, broken shards refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rio_sglang.checkpoint import verify_checkpoint
from rio_sglang.provenance import compare, summarize
from rio_sglang.provenance.__main__ import main
from rio_sglang.provenance.blend import classify
from rio_sglang.provenance.fit import blend_fit, block_sums, distance_fit
from rio_sglang.tiny import write_tiny_checkpoint
from rio_sglang.tiny.writer import write_shards


def load(path) -> dict:
    return {k: v for f in sorted(Path(path).glob("*.safetensors")) for k, v in load_file(f).items()}


def write_child(out: Path, tensors: dict, like: Path) -> Path:
    out.mkdir(parents=True)
    shutil.copy(like / "config.json", out)
    write_shards(tensors, out)
    return out


def blend(a: dict, b: dict, alpha: float = 0.6, noise: float = 1e-3, seed: int = 7) -> dict:
    """alpha*A + (1-alpha)*B plus Gaussian noise of `noise` times each tensor's std, in bf16."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, ta in a.items():
        c = alpha * ta.float() + (1 - alpha) * b[k].float()
        out[k] = (c + noise * c.std(correction=0) * torch.randn(c.shape, generator=g)).bfloat16()
    return out


@pytest.fixture(scope="module")
def ckpts(tiny_ckpt, tmp_path_factory):
    """Parents A (the session's seed 0) and B (seed 1), an unrelated C (seed 2), and their
    tensors; children are written next to them."""
    root = tmp_path_factory.mktemp("provenance")
    b = write_tiny_checkpoint(root / "b", "tiny", seed=1)
    c = write_tiny_checkpoint(root / "c", "tiny", seed=2)
    ta, tb, tc = load(tiny_ckpt), load(b), load(c)
    child = write_child(root / "blend", blend(ta, tb), tiny_ckpt)
    return {"root": root, "a": tiny_ckpt, "b": b, "c": c, "ta": ta, "tb": tb, "tc": tc,
            "blend": child}


@pytest.mark.parametrize("name, layer, component", [
    ("model.language_model.layers.3.self_attn.q_proj.weight", 3, "attention"),
    ("model.language_model.layers.0.linear_attn.in_proj_qkv.weight", 0, "GDN"),
    ("model.language_model.layers.12.mlp.experts.7.down_proj.weight", 12, "experts"),
    ("model.language_model.layers.1.mlp.experts.gate_up_proj", 1, "experts"),
    ("model.language_model.layers.1.mlp.shared_expert.up_proj.weight", 1, "shared expert"),
    ("model.language_model.layers.1.mlp.shared_expert_gate.weight", 1, "shared expert"),
    ("model.language_model.layers.2.mlp.gate.weight", 2, "router"),
    ("model.language_model.layers.2.input_layernorm.weight", 2, "norms"),
    ("model.language_model.embed_tokens.weight", None, "embeddings"),
    ("lm_head.weight", None, "embeddings"),
    ("model.language_model.norm.weight", None, "norms"),
    ("model.visual.blocks.0.attn.qkv.weight", None, "vision"),
    ("mtp.layers.0.self_attn.q_proj.weight", None, "mtp"),
    ("mtp.fc.weight", None, "mtp"),
])
def test_classify(name, layer, component):
    assert classify(name) == (layer, component)


def test_fits_by_hand():
    # y = c - b = [0.5, 1], d = a - b = [1, 0]: alpha 0.5, residual 1 = ||d||, se sqrt(1/1/1)
    f = blend_fit(block_sums(np.array([0.5, 1.0]), np.array([1.0, 0.0]), np.zeros(2)))
    assert (f.alpha, f.residual, f.alpha_se, f.parents_equal) == (0.5, 1.0, 1.0, False)
    exact = blend_fit(block_sums(np.array([1.0, 3.25]), np.array([4.0, 1.0]), np.array([0.0, 4.0])))
    assert exact.alpha == pytest.approx(0.25) and exact.residual == pytest.approx(0, abs=1e-12)
    same = blend_fit(block_sums(np.ones(3), np.ones(3), np.ones(3)))
    assert same.parents_equal and same.child_equals_parents and same.alpha is None
    d = distance_fit(block_sums(np.array([3.0, 4.0]), np.array([3.0, 0.0])))
    assert (d.distance, d.cosine) == (pytest.approx(4 / 3), pytest.approx(0.6))


def test_blend_is_found(ckpts):
    s = summarize(compare(ckpts["blend"], [ckpts["a"], ckpts["b"]], progress=False))
    fitted = [t for t in s["tensors"] if not t["parents_equal"]]
    assert len(fitted) > 100
    assert all(abs(t["alpha"] - 0.6) <= 0.005 for t in fitted), s["disagreeing"]
    assert s["verdict"].startswith("BLEND: consistent with a single 0.600 / 0.400 blend for 100.0%")
    assert s["disagreeing"] == [] and s["missing"] == [] and s["mismatched"] == []
    fingerprints = {role: c["fingerprint"] for role, c in s["checkpoints"].items()}
    assert fingerprints == {"child": verify_checkpoint(ckpts["blend"]).fingerprint,
                            "parent_a": verify_checkpoint(ckpts["a"]).fingerprint,
                            "parent_b": verify_checkpoint(ckpts["b"]).fingerprint}


def test_row_blocks_and_sampling_agree_with_whole_reads(ckpts):
    args = (ckpts["blend"], [ckpts["a"], ckpts["b"]])
    whole = compare(*args, progress=False)
    rows = compare(*args, block_elems=7, progress=False)  # one row (last-dim vector) per read
    sampled = compare(*args, sample_rows=3, seed=1, progress=False)
    determined = [i for i, r in enumerate(whole.results) if r.fit.alpha is not None]
    assert [rows.results[i].fit.alpha for i in determined] == pytest.approx(
        [whole.results[i].fit.alpha for i in determined], rel=1e-9)
    assert [r.fit.alpha for r in rows.results].count(None) == len(whole.results) - len(determined)
    assert sampled.bytes_read < whole.bytes_read / 4
    assert all(abs(r.fit.alpha - 0.6) <= 0.005 for r in sampled.results if r.fit.alpha is not None)


def test_unrelated_child_is_no_blend(ckpts):
    s = summarize(compare(ckpts["c"], [ckpts["a"], ckpts["b"]], progress=False))
    assert s["verdict"].startswith("NO BLEND"), s["verdict"]
    assert s["blend_share"] == 0.0 and s["median_residual"] > 0.5


def test_replaced_layer_is_named(ckpts):
    mixed = blend(ckpts["ta"], ckpts["tb"])
    layer2 = [k for k in mixed if ".layers.2." in k]
    mixed.update({k: ckpts["tc"][k] for k in layer2})
    child = write_child(ckpts["root"] / "replaced", mixed, ckpts["a"])
    s = summarize(compare(child, [ckpts["a"], ckpts["b"]], progress=False))
    # Layer 2's norms start at zero in every seed: those few really are still a blend.
    changed = {k for k in layer2 if not torch.equal(ckpts["tc"][k].float(),
                                                    (0.6 * ckpts["ta"][k] + 0.4 * ckpts["tb"][k]))}
    assert len(changed) >= 36
    assert {d["name"] for d in s["disagreeing"]} == changed
    assert {(g["layer"], g["component"]) for g in s["groups"] if g["disagreeing"]} == {
        (2, "GDN"), (2, "experts"), (2, "router"), (2, "shared expert")}
    assert s["verdict"].startswith("PARTIAL BLEND"), s["verdict"]


def test_missing_renamed_and_mismatched_tensors_are_listed(ckpts):
    t = blend(ckpts["ta"], ckpts["tb"])
    gate = "model.language_model.layers.0.mlp.gate.weight"
    t["model.language_model.layers.0.mlp.router.weight"] = t.pop(gate)  # renamed
    dropped = "model.language_model.layers.1.mlp.experts.3.up_proj.weight"
    del t[dropped]
    wide = "model.language_model.layers.1.mlp.experts.4.up_proj.weight"
    t[wide] = torch.cat([t[wide], t[wide][:1]])
    f32 = "model.language_model.layers.1.mlp.experts.5.up_proj.weight"
    t[f32] = t[f32].float()
    s = summarize(compare(write_child(ckpts["root"] / "renamed", t, ckpts["a"]),
                          [ckpts["a"], ckpts["b"]], progress=False))
    assert s["missing"] == [
        {"name": gate, "present_in": ["parent_a", "parent_b"]},
        {"name": "model.language_model.layers.0.mlp.router.weight", "present_in": ["child"]},
        {"name": dropped, "present_in": ["parent_a", "parent_b"]}]
    assert [(m["name"], m["what"], m["fitted"], m["child"]) for m in s["mismatched"]] == [
        (wide, "shape differs", False, "BF16[33, 64]"), (f32, "dtype differs", True, "F32[32, 64]")]
    assert s["verdict"].startswith("BLEND") and s["disagreeing"] == []
    assert abs(next(x["alpha"] for x in s["tensors"] if x["name"] == f32) - 0.6) <= 0.005


def test_one_parent_distance_and_cosine(ckpts):
    near = {k: (v.float() * 1.001).bfloat16() for k, v in ckpts["ta"].items()}
    child = write_child(ckpts["root"] / "near", near, ckpts["a"])
    s = summarize(compare(child, [ckpts["a"]], progress=False))
    assert s["verdict"].startswith("CLOSE: 100.0%") and s["median_cosine"] > 0.999
    far = summarize(compare(ckpts["c"], [ckpts["a"]], progress=False))
    assert far["verdict"].startswith("NO CLOSE") and abs(far["median_cosine"]) < 0.2


def test_cli_writes_reports(ckpts, tmp_path, capsys):
    main(["blend", str(ckpts["blend"]), str(ckpts["a"]), str(ckpts["b"]), "--out", str(tmp_path),
          "--no-progress"])
    assert capsys.readouterr().out.startswith("BLEND: consistent with a single 0.600 / 0.400")
    report = json.loads((tmp_path / "blend.json").read_text())  # strict JSON: no NaN
    assert report["verdict"] in (tmp_path / "blend.md").read_text()
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "blend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    except ImportError:
        assert "matplotlib is not installed" in report["plot"]


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "listed in the index are missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated or padded"),
    (lambda p: p.write_bytes(b"\xff" * 64), "header length .* exceeds file size"),
    (lambda p: p.write_bytes(b"\x0a" + b"\x00" * 7 + b"not json!!"), "corrupt safetensors header"),
])
def test_absent_or_corrupt_shard_is_a_clear_error(ckpts, tmp_path, damage, message):
    broken = shutil.copytree(ckpts["b"], tmp_path / "broken")
    damage(broken / "model-00002-of-00004.safetensors")
    with pytest.raises(SystemExit, match=f"error: .*{message}"):
        main(["blend", str(ckpts["blend"]), str(ckpts["a"]), str(broken), "--out",
              str(tmp_path / "out"), "--no-progress"])


def test_import_is_light():
    probe = ("import sys, rio_sglang.provenance.__main__; print(sorted({m.split('.')[0] for m in "
             "sys.modules} & {'sglang', 'torch', 'transformers', 'matplotlib'}))")
    assert subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                          text=True).stdout.strip() == "[]"

"""A wrong model path or a corrupt checkpoint ends in a clear error naming it, never a hang."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from rio_sglang.checkpoint import CheckpointError, verify_checkpoint
from rio_sglang.sglang_server import ServerStartError, start_server
from rio_sglang.tiny import write_tiny_checkpoint

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("pristine") / "tiny", "tiny", seed=0)


def first_shard(ckpt):
    return min(ckpt.glob("*.safetensors"))


def drop_shard(ckpt):
    first_shard(ckpt).unlink()


def truncate_shard(ckpt):
    p = first_shard(ckpt)
    p.write_bytes(p.read_bytes()[:-100])


def garble_header(ckpt):
    p = first_shard(ckpt)
    data = bytearray(p.read_bytes())
    data[8:20] = b"not json!!!!"
    p.write_bytes(bytes(data))


def break_config(ckpt):
    (ckpt / "config.json").write_text("{ this is not json")


def rename_in_index(ckpt):
    idx = json.loads((ckpt / INDEX).read_text())
    shard = next(iter(idx["weight_map"].values()))
    idx["weight_map"]["model.language_model.ghost.weight"] = shard
    (ckpt / INDEX).write_text(json.dumps(idx))


def wrong_total(ckpt):
    idx = json.loads((ckpt / INDEX).read_text())
    idx["metadata"]["total_size"] += 2
    (ckpt / INDEX).write_text(json.dumps(idx))


# corruption, what the message must name
CORRUPTIONS = [
    (drop_shard, r"shard\(s\) listed in the index are missing: model-00001-of-"),
    (truncate_shard, r"shard model-00001-of-\d+\.safetensors: \d+ bytes on disk"),
    (garble_header, r"shard model-00001-of-\d+\.safetensors: (corrupt safetensors header|header)"),
    (break_config, r"config\.json is not valid JSON"),
    (rename_in_index, r"lacks tensors the index puts there: \['model\.language_model\.ghost"),
    (wrong_total, r"index total_size \d+ != \d+ bytes"),
]


@pytest.mark.parametrize("corrupt,message", CORRUPTIONS, ids=[c[0].__name__ for c in CORRUPTIONS])
def test_corrupt_checkpoint_is_named(tmp_path, pristine, corrupt, message):
    ckpt = shutil.copytree(pristine, tmp_path / "ckpt")
    verify_checkpoint(ckpt)
    corrupt(ckpt)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(ckpt)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"/nowhere does not exist"):
        verify_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("corrupt,named", [(None, "nowhere does not exist"),
                                           (drop_shard, "are missing: model-00001-of-")],
                         ids=["wrong-path", "missing-shard"])
def test_launcher_refuses_before_starting_sglang(tmp_path, pristine, corrupt, named):
    path = tmp_path / "nowhere"
    if corrupt is not None:
        path = shutil.copytree(pristine, tmp_path / "ckpt")
        corrupt(path)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "rio_sglang.cli", "serve", "--model-path",
                        str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert "cannot serve" in r.stderr and named in r.stderr
    assert time.monotonic() - t0 < 60


@pytest.mark.server
def test_server_death_is_reported_not_waited_out(tmp_path, pristine):
    """A checkpoint that passes the index check but that SGLang cannot build: the wait reports
    the exit and the log's tail instead of waiting out its timeout."""
    ckpt = shutil.copytree(pristine, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    srv = start_server(ckpt, log_path=tmp_path / "server.log")
    t0 = time.monotonic()
    try:
        with pytest.raises(ServerStartError, match=r"(?s)server exited with code .*NoSuchModel"):
            srv.wait_ready(timeout=400)
    finally:
        srv.stop()
    assert time.monotonic() - t0 < 300

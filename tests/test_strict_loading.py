"""Our class loads strictly: a missing, an extra or a wrongly shaped tensor stops the server with
a message naming it (SGLang's built-in class would load such a checkpoint silently). The bad
servers start together: their startups (mostly single-threaded imports) overlap."""

from __future__ import annotations

import glob
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rio_sglang.sglang_server import ServerStartError, start_server
from rio_sglang.tiny import write_tiny_checkpoint
from rio_sglang.tiny.writer import write_shards

pytestmark = pytest.mark.server
EXPERT = "model.language_model.layers.1.mlp.experts.3.up_proj.weight"
GATE = "model.language_model.layers.2.mlp.gate.weight"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("pristine") / "tiny", "tiny", seed=0)


def rewrite(src, dst, edit) -> None:
    shutil.copytree(src, dst)
    tensors = {}
    for shard in glob.glob(str(dst / "*.safetensors")):
        tensors.update(load_file(shard))
        os.remove(shard)
    edit(tensors)
    write_shards(tensors, dst)


def drop(t):
    del t[EXPERT]


def extra(t):
    t["model.language_model.layers.0.mlp.experts.99.up_proj.weight"] = t[EXPERT].clone()


def reshape(t):
    t[GATE] = torch.zeros(t[GATE].shape[0] + 1, t[GATE].shape[1], dtype=t[GATE].dtype)


# edit, what the error must say
CASES = [
    (drop, (r"1 missing: model\.layers\.1\.mlp\.w13 needs "
            r"model\.language_model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight")),
    (extra, r"1 unexpected: model\.language_model\.layers\.0\.mlp\.experts\.99\.up_proj"),
    (reshape, (r"wrongly shaped: model\.language_model\.layers\.2\.mlp\.gate\.weight: "
               r"shape \(9, 64\), expected \(8, 64\) "
               r"\(fills model\.layers\.2\.mlp\.gate\.weight\)")),
]


def launch_refused(pristine, tmp_path_factory, cases, **launch_args) -> dict:
    """One server per (edit, message) case on `pristine` rewritten by `edit`, all started at
    once and not waited for: {edit name: server}."""
    servers = {}
    for edit, _ in cases:
        root = tmp_path_factory.mktemp(edit.__name__)
        rewrite(pristine, root / "ckpt", edit)
        servers[edit.__name__] = start_server(root / "ckpt", log_path=root / "server.log",
                                        **launch_args)
    return servers


@pytest.fixture(scope="module")
def refused(pristine, tmp_path_factory):
    servers = launch_refused(pristine, tmp_path_factory, CASES)
    yield servers
    for srv in servers.values():
        srv.stop()


@pytest.mark.parametrize("edit,message", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_checkpoint_is_refused_naming_the_tensor(refused, edit, message):
    srv = refused[edit.__name__]
    try:
        with pytest.raises(ServerStartError, match=rf"(?s)server exited.*WeightLoadError.*{message}"):
            srv.wait_ready(timeout=400)
    finally:
        srv.stop()

"""Fixtures shared by tests/: generated tiny checkpoints (Rio and the paper's other families) and
one real SGLang server per session."""

from __future__ import annotations

import pytest
import requests
import torch

from rio_sglang.sglang_server import start_server
from rio_sglang.tiny import write_family_checkpoint, write_tiny_checkpoint


@pytest.fixture
def one_thread():
    """Tensors of a few hundred elements: more threads only contend on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """The `tiny` preset (3 GDN + 1 attention layer, 8 experts top-2), per-expert keys."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def family_ckpt(tmp_path_factory):
    """`family_ckpt(name, think_tags=True) -> Path`: a paper family's tiny checkpoint
    (rio_sglang.tiny.families.FAMILIES, seed 0), written once per session."""
    written = {}

    def get(name: str, think_tags: bool = True):
        key = (name, think_tags)
        if key not in written:
            folder = tmp_path_factory.mktemp("family") / (name + ("" if think_tags else "-no-think"))
            written[key] = write_family_checkpoint(folder, name, seed=0, think_tags=think_tags)
        return written[key]

    return get


@pytest.fixture(scope="session")
def server(tiny_ckpt, tmp_path_factory):
    """A real `sglang.launch_server` on the tiny checkpoint (CPU platform); yields its URL."""
    srv = start_server(tiny_ckpt, log_path=tmp_path_factory.mktemp("logs") / "server.log")
    try:
        srv.wait_ready(timeout=600)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def post(server):
    """POST JSON to the session server and return the decoded JSON (asserting HTTP 200)."""

    def _post(path: str, body: dict, status: int = 200):
        r = requests.post(server.url + path, json=body, timeout=600)
        assert r.status_code == status, (r.status_code, r.text[:500], server.log_tail(20))
        return r.json()

    return _post

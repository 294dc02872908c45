"""Fixtures shared by tests/: generated tiny checkpoints and one real SGLang server per session."""

from __future__ import annotations

import pytest
import requests

from rio_sglang.launcher import launch
from rio_sglang.tiny import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """The `tiny` preset (3 GDN + 1 attention layer, 8 experts top-2), per-expert keys."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def server(tiny_ckpt, tmp_path_factory):
    """A real `sglang.launch_server` on the tiny checkpoint (CPU platform); yields its URL."""
    srv = launch(tiny_ckpt, log_path=tmp_path_factory.mktemp("logs") / "server.log")
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

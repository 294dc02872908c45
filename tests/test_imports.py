"""Importing our packages initialises no CUDA and imports no `sglang.srt` (SGLang forks later)."""

import subprocess
import sys

import pytest

MODULES = ["rio_sglang", "rio_kernels", "rio_frontend", "rio_sglang.tiny", "rio_sglang.env",
           "rio_sglang.checkpoint", "rio_sglang.launcher", "rio_sglang.quickstart",
           "rio_sglang.logmarks", "rio_sglang.cpu", "rio_sglang.reasoning", "rio_kernels.fused_moe"]

PROBE = """
import sys, importlib
importlib.import_module({mod!r})
srt = sorted(m for m in sys.modules if m == "sglang.srt" or m.startswith("sglang.srt."))
torch = sys.modules.get("torch")
cuda = bool(torch is not None and torch.cuda.is_initialized())
bare = "kernels" in sys.modules or "frontend" in sys.modules
print(len(srt), cuda, bare)
"""


@pytest.mark.parametrize("mod", MODULES)
def test_import_is_clean(mod):
    out = subprocess.run([sys.executable, "-c", PROBE.format(mod=mod)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["0", "False", "False"], f"{mod}: sglang.srt modules, CUDA init, bare name"

"""The reasoning plugin changes SGLang only in a process that asks for SwiReasoning: run through
SGLang's own plugin loader, without SGLANG_EXTERNAL_MODEL_PACKAGE naming our model package and
without RIO_SWIREASONING=1 (a stock SGLang model class) every hooked target is SGLang's original
and its log names no hook of ours; with either, every one is hooked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, logging, os, pkgutil
logging.basicConfig(level=logging.INFO)
import sglang.srt.plugins as plugins
from rio_sglang.runtime import hooks

def probe():
    wrapped = []
    for target, _, _ in hooks.hooks():
        owner, name = target.rsplit(".", 1)
        raw = pkgutil.resolve_name(owner).__dict__[name]
        wrapped.append(hasattr(getattr(raw, "__func__", raw), "__wrapped__"))
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.kernels.ops.speculative import spec_tree
    return {"wrapped": wrapped, "streamer": Scheduler.get_output_streamer_class(None).__name__,
            "cpu_patched": spec_tree._is_xpu}

plugins.load_plugins()
print("PLAIN", json.dumps(probe()), flush=True)
os.environ[VAR] = VALUE
plugins._plugins_loaded = False  # SGLang loads once per process: this probe loads again
plugins.load_plugins()
print("OURS", json.dumps(probe()), flush=True)
"""


# what turns the plugin on: our model class, or SwiReasoning for whatever class SGLang builds
SWITCHES = [("SGLANG_EXTERNAL_MODEL_PACKAGE", "rio_sglang.models"), ("RIO_SWIREASONING", "1")]


@pytest.mark.parametrize("var,value", SWITCHES, ids=[v for v, _ in SWITCHES])
def test_plain_sglang_is_untouched_ours_is_hooked(var, value):
    env = {k: v for k, v in os.environ.items()
           if k not in ("SGLANG_EXTERNAL_MODEL_PACKAGE", "RIO_CPU_PLATFORM", "SGLANG_PLUGINS",
                        "RIO_SWIREASONING")}
    probe = f"VAR, VALUE = {var!r}, {value!r}\n" + PROBE
    run = subprocess.run([sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:]
    plain_log, rest = run.stdout.split("\nPLAIN ", 1)
    plain, ours_log = rest.split("\n", 1)
    ours_log, ours = ours_log.split("\nOURS ", 1)
    plain, ours = json.loads(plain), json.loads(ours.split("\n", 1)[0])
    n = len(plain["wrapped"])
    assert plain == {"wrapped": [False] * n, "streamer": "SchedulerOutputStreamer",
                     "cpu_patched": False}
    assert ours == {"wrapped": [True] * n, "streamer": "ReasoningOutputStreamer",
                    "cpu_patched": False}
    # SGLang's registry logs each hooked target with the plugin that hooked it
    assert "plugin=rio_reasoning" not in plain_log
    assert ours_log.count("(from: plugin=rio_reasoning") == n

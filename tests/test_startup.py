"""tests/startup/sitecustomize.py reaches the processes the tests start (the root conftest)."""

import subprocess
import sys


def test_a_started_python_collects_rarely_and_keeps_its_path():
    code = "import gc, sys; print(gc.get_threshold(), sys.modules['sitecustomize'].__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["(100000,", "1000,", "1000)", "sitecustomize"]
    assert out.stderr == ""

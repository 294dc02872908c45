"""Imported first by every Python process the tests start (the root conftest puts this folder on
PYTHONPATH): SGLang servers and their scheduler / detokenizer processes, CLI and bench runs.

A CPU server's start is ~12 s of imports in each of its processes, and the cyclic collector's
passes over the growing module graph are ~20% of it at the default thresholds (700, 10, 10).
Rarer passes change when unreachable cycles are freed, nothing that a test checks.
"""

import gc
import os
import sys

gc.set_threshold(100_000, 1_000, 1_000)

# Then the sitecustomize that this one hides, if the interpreter has one.
_here = os.path.dirname(os.path.abspath(__file__))
_at = [i for i, p in enumerate(sys.path) if os.path.abspath(p or ".") == _here]
for _i in reversed(_at):
    del sys.path[_i]
_self = sys.modules.pop(__name__)
try:
    import sitecustomize  # noqa: F401
except ImportError:
    sys.modules[__name__] = _self  # none: site's import returns this module
finally:
    for _i in _at:
        sys.path.insert(_i, _here)

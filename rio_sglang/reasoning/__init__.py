"""SwiReasoning runtime: request spec, token ids, the device state and its plain reference.

Imports neither `sglang` nor CUDA; the step's Triton kernels (`rio_kernels.swir_step`, driven by
`device.py`) load on first use. The names load on first use too (PEP 562):
`rio_sglang.reasoning.spec`, all a client needs (the spec dataclass), imports without torch, so
`import rio_frontend` stays light.
"""

from __future__ import annotations

import importlib

# name -> the submodule that defines it
_NAMES = {
    "ReferenceResult": "reference",
    "generate_reference": "reference",
    "swir_step": "reference",
    "SPEC_KEY": "spec",
    "ReasoningSpec": "spec",
    "ReasoningSpecError": "spec",
    "ReasoningStats": "spec",
    "ReasoningState": "state",
    "ReasoningTokens": "tokens",
    "resolve_tokens": "tokens",
}

__all__ = [  # the keys of _NAMES (tests/test_imports.py)
    "SPEC_KEY",
    "ReasoningSpec",
    "ReasoningSpecError",
    "ReasoningState",
    "ReasoningStats",
    "ReasoningTokens",
    "ReferenceResult",
    "generate_reference",
    "resolve_tokens",
    "swir_step",
]


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))

"""SwiReasoning runtime: request spec, token ids, the batched state machine and its reference.

Imports neither `sglang` nor CUDA; the Triton kernels load on first use (see `ops.py`).
"""

from rio_sglang.reasoning.reference import ReferenceResult, generate_reference, swir_step
from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec, ReasoningSpecError, ReasoningStats
from rio_sglang.reasoning.state import ReasoningState, StepOutput
from rio_sglang.reasoning.tokens import ReasoningTokens, resolve_tokens

__all__ = [
    "SPEC_KEY",
    "ReasoningSpec",
    "ReasoningSpecError",
    "ReasoningState",
    "ReasoningStats",
    "ReasoningTokens",
    "ReferenceResult",
    "StepOutput",
    "generate_reference",
    "resolve_tokens",
    "swir_step",
]

"""The fused SwiReasoning step: Triton kernels (kernel.py: logits passes, update.py: the state
machine) launched by `launch.py`, their column layout (`layout.py`), and the plain fp32 torch
twins of the logits passes (`ref.py`; the whole step's is `rio_sglang.reasoning.reference`)."""

from .. import lazy_exports
from .ref import lse_entropy_ref, mix_ref

__all__ = ["PreSample", "StepTables", "lse_entropy_ref", "mix_ref", "post_sample", "pre_sample",
           "reduce_partials", "row_stats"]
__getattr__ = lazy_exports(__name__, {name: "launch" for name in (
    "PreSample", "StepTables", "post_sample", "pre_sample", "reduce_partials", "row_stats")})

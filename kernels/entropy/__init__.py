"""Softmax entropy over the vocabulary: `kernel.py` (Triton, one pass) and `ref.py` (torch fp32)."""

from .. import lazy_exports
from .ref import softmax_entropy_max_ref, softmax_entropy_ref

__all__ = ["softmax_entropy", "softmax_entropy_max", "softmax_entropy_max_ref",
           "softmax_entropy_ref"]
__getattr__ = lazy_exports(__name__, {"softmax_entropy": "kernel", "softmax_entropy_max": "kernel"})

"""Check a checkpoint's lineage: `blend` fits a child's weights against one or two parents,
`identity` asks a running server who it is. CLI: `python -m rio_sglang.provenance`."""

from .blend import Comparison, compare
from .identity import ask_identity, wilson
from .report import summarize

__all__ = ["Comparison", "ask_identity", "compare", "summarize", "wilson"]

"""Tiny generated checkpoints of the real Qwen3.5-MoE architecture, for tests and the CPU server.

`rio-sglang tiny OUT_DIR [--preset NAME] [--seed N] [--expert-layout fused]
[--fp8 block|channel]`; the paper's other families (Qwen3, Qwen3-MoE, Llama, Qwen2) in
transformers' own classes: `--family NAME` (families.py).
"""

from .families import FAMILIES, write_family_checkpoint
from .presets import PRESETS, TinyPreset
from .writer import EXPERT_LAYOUTS, cached_tiny_checkpoint, write_tiny_checkpoint

__all__ = ["EXPERT_LAYOUTS", "FAMILIES", "PRESETS", "TinyPreset", "cached_tiny_checkpoint",
           "write_family_checkpoint", "write_tiny_checkpoint"]

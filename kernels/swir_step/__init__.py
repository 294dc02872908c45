"""Fused SwiReasoning step kernels (see kernel.py) and their column layout (layout.py)."""

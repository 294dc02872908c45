"""Softmax entropy over the vocabulary: `kernel.py` (Triton, one pass) and `ref.py` (torch fp32)."""

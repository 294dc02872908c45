"""rio-sglang: serve Rio 3.5 Open (Qwen3.5-MoE) on SGLang with SwiReasoning.

Importing this package imports neither `sglang.srt` nor CUDA: SGLang forks workers after import.
"""

__version__ = "0.1.0"

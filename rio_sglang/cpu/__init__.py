"""SGLang on a CPU with no GPU: an out-of-tree platform plus a Triton-interpreter plugin.

Both are SGLang entry points (see pyproject.toml) that do nothing unless RIO_CPU_PLATFORM=1.
This module imports no SGLang; `srt_platform.py` and `patches.py` do, only once activated.
"""

from __future__ import annotations

from rio_sglang import env

PLATFORM_QUALNAME = "rio_sglang.cpu.srt_platform:RioCpuPlatform"


def platform_entry() -> str | None:
    """`sglang.srt.platforms` entry point: our platform's qualname, or None when not enabled."""
    return PLATFORM_QUALNAME if env.cpu_platform() else None


def plugin_entry() -> None:
    """`sglang.srt.plugins` entry point: adapt the Triton interpreter in every SGLang process."""
    if not env.cpu_platform():
        return
    from rio_sglang.cpu import patches

    patches.apply()

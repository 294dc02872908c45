"""Make SGLang's Triton kernels run under TRITON_INTERPRET=1 on a CPU (run in every process).

Each patch answers one thing the interpreter or a CPU tensor lacks; see shared CPU_SGLANG.md.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types

log = logging.getLogger(__name__)
_applied = False

# Names SGLang's fla ops bind at import time (`exp = tl.exp`): the interpreter only patches
# attributes of the `triton.language` modules, so such aliases must resolve late.
_FLA_OP_MODULE = "sglang.kernels.ops.attention.fla.op"
_LATE_ALIASES = {"exp": ("exp",), "exp2": ("math", "exp2"), "log": ("log",), "log2": ("log2",)}


def _late_alias(path: tuple[str, ...]):
    def call(*args, **kwargs):
        import triton.language as tl

        fn = tl
        for part in path:
            fn = getattr(fn, part)
        return fn(*args, **kwargs)

    call.__name__ = path[-1]
    return call


def _patch_fla_aliases() -> None:
    import importlib

    import triton.language as tl

    originals = {}
    for name, path in _LATE_ALIASES.items():
        obj = tl
        for part in path:
            obj = getattr(obj, part)
        originals[name] = obj
    importlib.import_module(_FLA_OP_MODULE)
    # Rebind in op.py and in every fla module that already copied the names.
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("sglang.") or mod is None:
            continue
        for name, original in originals.items():
            if getattr(mod, name, None) is original:
                setattr(mod, name, _late_alias(_LATE_ALIASES[name]))


def _patch_autotuner() -> None:
    """Keep one config: the interpreter cannot benchmark, and one config skips benchmarking."""
    from triton.runtime import autotuner

    init = autotuner.Autotuner.__init__

    def one_config_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.configs = self.configs[:1]

    autotuner.Autotuner.__init__ = one_config_init


def _patch_torch_device_queries() -> None:
    import torch

    if not hasattr(torch.cpu, "device"):
        torch.cpu.device = lambda index=None: contextlib.nullcontext()
    if torch.cuda.is_available():
        return
    props = types.SimpleNamespace(
        name="cpu (triton interpreter)", major=0, minor=0, multi_processor_count=1,
        total_memory=0, max_shared_memory_per_block_optin=0, L2_cache_size=0, warp_size=32,
    )
    torch.cuda.get_device_properties = lambda device=None: props
    torch.cuda.get_device_capability = lambda device=None: (0, 0)


def apply() -> None:
    """Idempotent; called by the `sglang.srt.plugins` entry point when RIO_CPU_PLATFORM=1."""
    global _applied
    if _applied:
        return
    _applied = True
    _patch_torch_device_queries()
    _patch_autotuner()
    _patch_fla_aliases()
    log.info("rio-sglang CPU platform: Triton interpreter patches applied")

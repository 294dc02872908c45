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


_device_calls_patched = False


def skip_repatching_device_calls() -> None:
    """Idempotent. Triton's interpreter re-patches `triton.language` on every call of a
    @triton.jit helper from inside a kernel (`InterpretedFunction.__call__` runs `_patch_lang`:
    `inspect.getmembers` over tl, tl.tensor, tl.math, ... per call, per program instance): a
    fifth of a CPU server's decode step. A second patch of an already patched module changes
    nothing (builtins already replaced are skipped, the rest are set to the same values). While
    a kernel's grid runs, its own `_patch_lang` has patched the modules it sees and the shared
    tensor class; a helper's patch is never undone (`__call__` drops its scope), so a module a
    helper once patched stays patched. A helper inside a running grid whose modules are all one
    or the other skips the patch; any other helper is patched as before. Pure Triton: the kernel
    tests use it too (root conftest). tests/test_cpu_patches.py fails if Triton moves a call."""
    global _device_calls_patched
    if _device_calls_patched:
        return
    _device_calls_patched = True
    import inspect

    import triton.language as tl
    from triton.runtime import interpreter

    patched: dict[int, int] = {}  # id(language module) -> running grids that patched it
    for_good: set[int] = set()  # modules a helper's (never restored) patch left patched
    seen: dict[object, tuple[int, ...]] = {}

    def lang_ids(fn) -> tuple[int, ...]:
        if fn not in seen:  # the modules `_patch_lang(fn)` patches
            seen[fn] = tuple(id(v) for v in fn.__globals__.values()
                             if inspect.ismodule(v) and v in (tl, tl.core))
        return seen[fn]

    grid_call = interpreter.GridExecutor.__call__
    device_call = interpreter.InterpretedFunction.__call__

    def counted_grid_call(self, *args, **kwargs):
        ids = lang_ids(self.fn)
        for i in ids:
            patched[i] = patched.get(i, 0) + 1
        try:
            return grid_call(self, *args, **kwargs)
        finally:
            for i in ids:
                patched[i] -= 1

    def device_call_inside_grid(self, *args, **kwargs):
        ids = lang_ids(self.fn)
        if not ids or not any(patched.values()) or \
                not all(i in for_good or patched.get(i) for i in ids):
            try:
                return device_call(self, *args, **kwargs)
            finally:
                for_good.update(ids)
        fn = self.rewrite()  # the rest of InterpretedFunction.__call__, unchanged
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    interpreter.GridExecutor.__call__ = counted_grid_call
    interpreter.InterpretedFunction.__call__ = device_call_inside_grid


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


def _route_eagle_tree_to_triton() -> None:
    """EAGLE / NEXTN speculative decoding builds and verifies its draft tree with sgl_kernel
    CUDA ops, and refuses out-of-tree platforms. SGLang ships Triton versions of both (its XPU
    path, chosen by the module flag `_is_xpu` at call time); they run under the interpreter."""
    from sglang.kernels.ops.speculative import spec_tree

    spec_tree._is_xpu = True


_SCATTER_MODULE = "sglang.kernels.ops.mamba.mamba_state_scatter_triton"
_SCATTER_NAMES = ("fused_mamba_state_scatter_with_mask", "fused_conv_window_scatter_with_mask")
# Modules that bind the scatter functions at import time (patched too if already imported).
_SCATTER_USERS = ("sglang.srt.layers.attention.hybrid_linear_attn_backend",
                  "sglang.srt.speculative.spec_utils")


def state_scatter(dst, src, dst_indices_raw, step_indices_raw, src_indices_raw=None) -> None:
    """Torch form of SGLang's two masked state scatters after a speculative verify (their
    Triton launchers refuse tensors that are not CUDA/XPU): for every request i with
    step[i] >= 0 and indices in range, dst[:, dst_idx[i]] = src[:, src_row[i], step[i]].
    dst [layers, cache, *state]; src [layers, rows, draft_tokens, *state] (may be an
    overlapping view, as the conv-window cache is)."""
    import torch

    steps = step_indices_raw.long()
    if steps.numel() == 0 or dst.numel() == 0:
        return
    rows = (torch.arange(steps.numel(), device=steps.device) if src_indices_raw is None
            else src_indices_raw.long())
    dsts = dst_indices_raw.long()
    keep = ((steps >= 0) & (dsts >= 0) & (dsts < dst.shape[1]) & (rows < src.shape[1])
            & (steps < src.shape[2]))
    dsts, rows, steps = dsts[keep], rows[keep], steps[keep]
    dst[:, dsts] = src[:, rows, steps].to(dst.dtype)


def _patch_state_scatter() -> None:
    import importlib

    for name in (_SCATTER_MODULE, *_SCATTER_USERS):
        if name == _SCATTER_MODULE or name in sys.modules:
            module = importlib.import_module(name)
            for fn in _SCATTER_NAMES:
                if hasattr(module, fn):
                    setattr(module, fn, state_scatter)


_TORCH_NATIVE = "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend"
# Longer extends (of one sequence) keep SGLang's single causal call: the per-query loop costs a
# call per token and layer, and only re-prefilled outputs need its bits.
ROWWISE_MAX = 512


def rowwise_extend(original):
    """SGLang's torch_native `_run_sdpa_forward_extend`, each query row computed as its decode
    step would compute it (one query against the keys up to it, no mask), so that a position's
    attention has the same bits whether prefilled or decoded: a request SGLang retracts and
    prefills again then recomputes exactly the KV it had (one causal call over all rows rounds
    differently). Sliding windows, cross-attention, encoders and long extends: SGLang's own."""
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    def extend(self, query, output, k_cache, v_cache, req_to_token, req_pool_indices, seq_lens,
               extend_prefix_lens, extend_seq_lens, encoder_lens=None, scaling=None,
               enable_gqa=False, causal=False, is_cross_attn=False, sliding_window_size=None):
        if (encoder_lens is not None or is_cross_attn or not causal
                or (sliding_window_size is not None and sliding_window_size > -1)
                or int(extend_seq_lens.max()) > ROWWISE_MAX):
            return original(self, query, output, k_cache, v_cache, req_to_token,
                            req_pool_indices, seq_lens, extend_prefix_lens, extend_seq_lens,
                            encoder_lens, scaling, enable_gqa, causal, is_cross_attn,
                            sliding_window_size)
        query = query.movedim(0, query.dim() - 2)  # [heads, tokens, d], as SGLang's decode
        start_q = 0
        for seq in range(seq_lens.shape[0]):
            prefix, n = int(extend_prefix_lens[seq]), int(extend_seq_lens[seq])
            tokens = req_to_token[req_pool_indices[seq], : int(seq_lens[seq])]
            key = k_cache[tokens].movedim(0, query.dim() - 2)
            value = v_cache[tokens].movedim(0, query.dim() - 2)
            for i in range(n):
                q = query[:, start_q + i: start_q + i + 1, :]
                k, v = key[:, : prefix + i + 1], value[:, : prefix + i + 1]
                if not q.dtype == k.dtype == v.dtype:
                    k, v = k.to(q.dtype), v.to(q.dtype)
                out = sdpa(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), enable_gqa=enable_gqa,
                           scale=scaling, is_causal=False)
                output[start_q + i] = out.squeeze(0).movedim(query.dim() - 2, 0)[0]
            start_q += n
        return output

    extend.__wrapped__ = original
    return extend


def _patch_rowwise_extend() -> None:
    import pkgutil

    cls = pkgutil.resolve_name(_TORCH_NATIVE)
    cls._run_sdpa_forward_extend = rowwise_extend(cls._run_sdpa_forward_extend)


def apply() -> None:
    """Idempotent; called by the `sglang.srt.plugins` entry point when RIO_CPU_PLATFORM=1."""
    global _applied
    if _applied:
        return
    _applied = True
    _patch_torch_device_queries()
    skip_repatching_device_calls()
    _patch_autotuner()
    _patch_fla_aliases()
    _route_eagle_tree_to_triton()
    _patch_state_scatter()
    _patch_rowwise_extend()
    log.info("rio-sglang CPU platform: Triton interpreter patches applied")

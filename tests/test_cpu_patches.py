"""The torch form of SGLang's post-verify state scatter (used by NEXTN on the CPU platform)
against a plain per-request loop of the semantics SGLang's kernels document."""

from __future__ import annotations

import inspect

import pytest
import torch
import triton
import triton.language as tl

from rio_sglang.cpu.patches import state_scatter


def loop_scatter(dst, src, dst_idx, steps, rows):
    for i in range(len(steps)):
        d, s, t = int(dst_idx[i]), int(rows[i]), int(steps[i])
        if t >= 0 and 0 <= d < dst.shape[1] and s < src.shape[1] and t < src.shape[2]:
            dst[:, d] = src[:, s, t]


def conv_windows(shared: torch.Tensor, k1: int) -> torch.Tensor:
    """SGLang's deduplicated conv cache: step t's window is shared[..., t:t+K-1], overlapping."""
    layers, reqs, dim, width = shared.shape
    steps = width - k1 + 1
    s = shared.stride()
    return shared.as_strided((layers, reqs, steps, dim, k1), (s[0], s[1], s[3], s[2], s[3]))


# name, dst indices, step indices (-1 = rejected), source rows (None = request order)
CASES = [
    ("all-valid", [3, 0, 5], [1, 0, 2], None),
    ("rejected-and-out-of-range", [2, 7, 9, 1], [-1, 1, 0, 2], None),
    ("scratch-rows", [4, 1], [2, 1], [3, 0]),
    ("none", [], [], None),
]


@pytest.mark.parametrize("dst_idx,steps,rows", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("kind", ["ssm", "conv-window"])
def test_state_scatter_equals_the_loop(kind, dst_idx, steps, rows):
    g = torch.Generator().manual_seed(0)
    if kind == "ssm":
        src = torch.randn(2, 4, 3, 5, 6, generator=g, dtype=torch.float16)
        dst = torch.randn(2, 8, 5, 6, generator=g, dtype=torch.float16)
    else:
        src = conv_windows(torch.randn(2, 4, 7, 5, generator=g, dtype=torch.float16), k1=3)
        dst = torch.randn(2, 8, 7, 3, generator=g, dtype=torch.float16)
    before, want = dst.clone(), dst.clone()
    idx = torch.tensor(dst_idx, dtype=torch.int64)
    st = torch.tensor(steps, dtype=torch.int32)
    src_rows = None if rows is None else torch.tensor(rows, dtype=torch.int64)
    loop_scatter(want, src, idx, st, range(len(steps)) if rows is None else rows)
    state_scatter(dst, src, idx, st, src_rows)
    assert torch.equal(dst, want)
    assert torch.equal(dst, before) == (not any(s >= 0 for s in steps))  # the case wrote rows


# --- the interpreter skips re-patching triton.language for helpers inside a running grid ---

@triton.jit
def _twice(x):
    return x * 2.0


@triton.jit
def _twice_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, _twice(tl.load(x_ptr + offs)) + tl.exp(tl.zeros([BLOCK], tl.float32)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU interpreter's patch")
def test_helpers_inside_a_grid_skip_the_repatch_and_compute_the_same(monkeypatch):
    from triton.runtime import interpreter

    from rio_sglang.cpu import patches

    patches.skip_repatching_device_calls()  # idempotent: the root conftest applied it already
    calls = []
    real = interpreter._patch_lang
    monkeypatch.setattr(interpreter, "_patch_lang", lambda fn: calls.append(fn) or real(fn))
    x = torch.randn(64)
    for launch in range(2):
        calls.clear()
        out = torch.empty(64)
        _twice_kernel[(4,)](x, out, BLOCK=16)
        assert torch.equal(out, x * 2 + 1)
        # One patch for the grid; none for the calls of `_twice` (it sees tl, patched by the
        # grid) or of tl.zeros (a jit helper that sees tl.core) in its 4 programs, but maybe
        # one the first time tl.core is patched for good.
        assert calls[0].__name__ == "_twice_kernel"
        assert len(calls) == 1 or (launch == 0 and len(calls) == 2), calls


def test_the_interpreter_still_patches_where_the_speed_up_assumes():
    """The patch replaces InterpretedFunction.__call__ with its own tail and counts grids around
    GridExecutor.__call__: fail loudly if Triton moves either `_patch_lang` call."""
    import inspect

    from triton.runtime import interpreter

    device = inspect.getsource(interpreter.InterpretedFunction)
    call = device[device.index("def __call__"):]
    assert "_patch_lang(self.fn)\n        fn = self.rewrite()\n" in call
    assert "return fn(*args, **kwargs)" in call and "raise InterpreterError(repr(e))" in call
    grid = inspect.getsource(interpreter.GridExecutor)
    assert "patch_scope = _patch_lang(self.fn)" in grid and "patch_scope.restore()" in grid
    assert inspect.getsource(interpreter._patch_lang).count("fn.__globals__") == 1


# sequences of an extend batch: (cached prefix, new tokens); heads (query, kv): GQA or not
EXTENDS = [
    ("one prompt", [(0, 9)], (4, 4)),
    ("a re-prefill after a cached prefix, beside a prompt", [(3, 6), (0, 5)], (4, 2)),
]


@pytest.mark.parametrize("seqs,heads", [e[1:] for e in EXTENDS], ids=[e[0] for e in EXTENDS])
def test_extend_attention_has_the_bits_decode_gives(seqs, heads):
    """The CPU platform's torch_native extend (`patches.rowwise_extend`): each query row equals,
    bit for bit, the decode step of that position (SGLang's own `_run_sdpa_forward_decode` over
    the keys up to it), so a retracted request prefilled again recomputes the KV it had."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    from rio_sglang.cpu.patches import rowwise_extend

    gen = torch.Generator().manual_seed(0)
    hq, hk, d = *heads, 16
    slots = 64
    k_cache = torch.randn(slots, hk, d, generator=gen).half()
    v_cache = torch.randn(slots, hk, d, generator=gen).half()
    req_to_token = torch.randperm(slots, generator=gen).view(2, 32)
    total = sum(n for _, n in seqs)
    query = torch.randn(total, hq, d, generator=gen).half()
    pools = torch.arange(len(seqs))
    prefix = torch.tensor([p for p, _ in seqs])
    new = torch.tensor([n for _, n in seqs])
    extend = rowwise_extend(TorchNativeAttnBackend._run_sdpa_forward_extend)
    out = extend(None, query, torch.empty_like(query), k_cache, v_cache, req_to_token, pools,
                 prefix + new, prefix, new, scaling=0.25, enable_gqa=hq != hk, causal=True)
    row = 0
    for s, (p, n) in enumerate(seqs):
        for i in range(n):
            one = torch.empty(1, hq, d, dtype=query.dtype)
            TorchNativeAttnBackend._run_sdpa_forward_decode(
                None, query[row:row + 1], one, k_cache, v_cache, req_to_token, pools[s:s + 1],
                torch.tensor([p + i + 1]), scaling=0.25, enable_gqa=hq != hk, causal=False)
            assert torch.equal(out[row], one[0]), (s, i)
            row += 1


def test_the_platform_patches_sglangs_extend_attention():
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    from rio_sglang.cpu import patches

    patches.apply()  # idempotent
    ours = TorchNativeAttnBackend._run_sdpa_forward_extend
    # SGLang's method takes exactly the parameters ours passes on (an upgrade that changes it
    # fails here)
    assert list(inspect.signature(ours.__wrapped__).parameters) == list(
        inspect.signature(ours).parameters)

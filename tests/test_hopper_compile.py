"""Every Triton kernel compiles for Hopper (sm_90) with the tiles and flags a GPU gets, on this
CPU machine (bench/hopper_compile.py); the interpreter, which the other tests run, checks neither
the GPU tiles nor that a kernel is Triton the compiler accepts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rio_kernels.swir_step import launch

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
PTX_BF16_DOT = r"mma\S*\.bf16\.bf16"
PTX_E4M3_DOT = r"mma\S*\.e4m3\.e4m3"


def kernel_names() -> set[str]:
    """Every `@triton.jit def ..._kernel` of rio_kernels (helpers inlined into them excluded)."""
    names: set[str] = set()
    for path in (ROOT / "kernels").rglob("*.py"):
        if not path.name.startswith(("test_", "bench_", "sweep_")):
            names |= set(re.findall(r"@triton\.jit\s*\ndef (\w+_kernel)\(", path.read_text()))
    return names


def run_python(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("sm90") / "records.json"
    proc = run_python(["-m", "bench.hopper_compile", "--json", str(out)])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text())


def find(records: list[dict], case: str, kernel: str) -> dict:
    hits = [r for r in records if r["case"] == case and r["kernel"] == kernel]
    assert len(hits) == 1, f"{case}: {kernel} compiled {len(hits)} times"
    return hits[0]


def test_every_kernel_compiles_for_sm90(records):
    names = kernel_names()
    assert len(names) >= 13 and {"_stats_kernel", "_mix_kernel", "_update_kernel"} <= names, names
    assert names <= {r["kernel"] for r in records}, names - {r["kernel"] for r in records}
    assert {r["target"] for r in records} == {90}
    assert all(".target sm_90" in r["ptx"] for r in records)


# case, kernel, what the GPU branch of the host code gives it (one row: one GPU-only choice)
GPU_CHOICES = [
    ("step bf16 B=8", "_mix_kernel", lambda r: r["constexprs"]["BF16X2"] == "True"
     and re.search(PTX_BF16_DOT, r["ptx"])),
    ("step bf16 B=8", "_mix_kernel", lambda r: r["constexprs"]["BLOCK_H"]
     == str(launch.GPU_TILES[16].block_h) and r["num_stages"] == launch.GPU_TILES[16].num_stages),
    ("step bf16 B=64", "_mix_kernel", lambda r: r["constexprs"]["BLOCK_V"]
     == str(launch.GPU_TILES[64].block_v)),
    ("step fp16 B=8", "_mix_kernel", lambda r: r["constexprs"]["BF16X2"] == "False"),
    ("step bf16 B=8", "_mix_kernel", lambda r: r["constexprs"]["COPY"] == "False"),
    ("step bf16 B=64 COPY_LOGITS", "_mix_kernel", lambda r: r["constexprs"]["COPY"] == "True"
     and re.search(PTX_BF16_DOT, r["ptx"])),
    ("step bf16 B=8 COPY_LOGITS", "_stats_kernel", lambda r: r["constexprs"]["COPY"] == "True"),
    ("step bf16 B=8", "_mix_kernel", lambda r: "griddepcontrol" not in r["ptx"]),
    ("step bf16 B=8 PDL", "_stats_kernel", lambda r: "griddepcontrol.launch_dependents" in r["ptx"]),
    ("step bf16 B=64 PDL", "_mix_kernel", lambda r: "griddepcontrol.wait" in r["ptx"]),
    ("step bf16 B=1", "_stats_kernel", lambda r: r["constexprs"]["BLOCK"]
     == str(launch.STATS_TILES[16].block)),
    ("step bf16 B=1", "_update_kernel", lambda r: r["constexprs"]["BLOCK_R"] == "1"),
    ("step bf16 B=8 soft_topk", "_update_kernel", lambda r: r["constexprs"]["HAS_SPARSE"] == "True"),
    ("moe fp8-block w8a8 TP8 T=4096", "_gate_up_kernel", lambda r: re.search(PTX_E4M3_DOT, r["ptx"])),
    ("moe fp8-block TP8 T=1", "_gate_up_gemv_kernel", lambda r: "e4m3" in r["ptx"]),
    ("moe bf16 EP8 T=4096", "_gate_up_kernel", lambda r: r["num_stages"] == 3
     and "cp.async" in r["ptx"] and "wgmma" in r["ptx"]),  # pipelined, Hopper's warpgroup MMA
    ("moe bf16 EP8 T=4096", "_chunk_count_kernel", lambda r: r["constexprs"]["HAS_MAP"] == "True"),
    ("moe bf16 TP8 T=64 grouped", "_align_kernel", lambda r: r["constexprs"]["HAS_MAP"] == "False"),
    ("moe bf16 TP8 T=1", "_down_combine_kernel", lambda r: "griddepcontrol" not in r["ptx"]),
    ("moe bf16 I=128 T=1 PDL", "_gate_up_gemv_kernel",
     lambda r: "griddepcontrol.launch_dependents" in r["ptx"]),
    ("moe fp8-block I=128 T=8 PDL", "_down_combine_kernel",
     lambda r: "griddepcontrol.wait" in r["ptx"]),
]


@pytest.mark.parametrize("case,kernel,choice", GPU_CHOICES,
                         ids=[f"{c}:{k}" for c, k, _ in GPU_CHOICES])
def test_gpu_launches_get_gpu_choices(records, case, kernel, choice):
    assert choice(find(records, case, kernel))


def test_the_sweeps_row_block_mixtures_compile(records):
    """swir_step/tune.py's candidates that split 64 rows into row blocks (MixTiles.block_r)."""
    mixes = [r for r in records if r["case"].startswith("step mixture B=64")
             and r["kernel"] == "_mix_kernel"]
    assert {r["constexprs"]["BLOCK_R"] for r in mixes} == {"16", "32"}
    assert all(re.search(PTX_BF16_DOT, r["ptx"]) for r in mixes)


BROKEN = textwrap.dedent('''
    import triton
    import triton.language as tl


    def twice(x):  # plain Python: the interpreter calls it, the compiler cannot
        return x * 2


    @triton.jit
    def plain_call_kernel(x_ptr, N: tl.constexpr):
        i = tl.arange(0, N)
        tl.store(x_ptr + i, twice(tl.load(x_ptr + i)))


    @triton.jit
    def big_tile_kernel(a_ptr, out_ptr, K, N: tl.constexpr, BK: tl.constexpr):
        i = tl.arange(0, N)
        k = tl.arange(0, BK)
        acc = tl.zeros([N, N], tl.float32)
        for k0 in range(0, K, BK):
            a = tl.load(a_ptr + i[:, None] * K + (k0 + k)[None, :])
            acc += tl.dot(a, tl.load(a_ptr + (k0 + k)[:, None] * N + i[None, :]))
        tl.store(out_ptr + i[:, None] * N + i[None, :], acc)
''')
PROBE = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, sys.argv[1])
    from bench.hopper_compile import SMEM_LIMIT, compile_only
    records = []
    compile_only(records)
    import broken
    try:
        broken.plain_call_kernel[(1,)](torch.ones(16), N=16)
        print("plain call: compiled")
    except Exception as e:
        print("plain call: refused:", type(e).__name__)
    a = torch.empty(256, 1024, dtype=torch.bfloat16)
    broken.big_tile_kernel[(1,)](a, torch.empty(256, 256), 1024, N=256, BK=128, num_warps=8,
                                 num_stages=4)
    print("big tile: over" if records[-1]["shared"] > SMEM_LIMIT else "big tile: fits")
''')


def test_the_compile_refuses_what_the_interpreter_runs(tmp_path):
    """The check is worth its time only if it fails where the interpreter passes."""
    (tmp_path / "broken.py").write_text(BROKEN)
    run_interpreted = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import broken; "
                       "x = torch.ones(16); broken.plain_call_kernel[(1,)](x, N=16); "
                       "print(x.sum().item())")
    interp = subprocess.run([sys.executable, "-c", run_interpreted, str(tmp_path)],
                            env={**ENV, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
                            timeout=300, check=False)
    assert interp.returncode == 0 and interp.stdout.split()[-1] == "32.0", interp.stderr[-2000:]
    proc = run_python(["-c", PROBE, str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "plain call: refused: " in proc.stdout and "big tile: over" in proc.stdout, proc.stdout

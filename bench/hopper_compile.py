"""Compile every GPU launch of our Triton kernels for Hopper (sm_90) on a machine with no GPU:
`python -m bench.hopper_compile` (TRITON_INTERPRET unset). tests/test_hopper_compile.py runs it.

A stand-in driver reports an sm_90 target and each launch compiles (PTX, then the ptxas bundled
with Triton) without running, so the host code takes its GPU branches and the kernels get the
tiles, flags and constexprs a GPU gets: bf16 and fp8 tensor-core dots, pipelining, the tuned
tiles. The interpreter checks none of these. Outputs are never computed.
What it cannot tell: speed and numerics. Shared memory: each launch must fit sm_90's 227 KiB
by the running Triton's count. The device machines run Triton 3.6 (`--help` says how to run
this with it), whose count differs from 3.8's for a few small reduction buffers; both give the
294,912 B an H100 refused for a 256 x 128 mixture tile at 64 rows.
Prints one line per compiled kernel; `--json PATH` also writes them; `--sweeps` adds every
candidate of the GPU sweeps (reported, not failed: a sweep skips what a card refuses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import torch

TARGET = (90, 32)  # compute capability 9.0 (H100, H200), warp size
DEVICE_NAME = "NVIDIA H100 80GB HBM3"
SMEM_LIMIT = 232_448  # bytes of shared memory a block may use on sm_90 (227 KiB)
# Rio's shapes (H, V, top-k, experts' I at TP 8 / TP 1). E is cut to 16 local experts (EP: 16
# of 128): E only enters the kernels as an integer that Triton specialises on divisibility by
# 16, which 512 and 64 share, and 512 x 1024-wide experts would not fit this machine's memory.
H, V, TOPK, I_TP8, I_TP1, E = 4096, 248_320, 10, 128, 1024, 16


class HopperStandIn:
    """The few calls Triton's launcher makes of its driver, for an sm_90 that is not there."""

    def __init__(self) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", *TARGET)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_active(self) -> bool:
        return True


def compile_only(record: list[dict]) -> None:
    """Make every `kernel[grid](...)` compile for the stand-in target and return unlaunched."""
    import triton
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    from rio_kernels.fused_moe import configs

    assert not triton.knobs.runtime.interpret, "unset TRITON_INTERPRET: this compiles for sm_90"
    driver.set_active(HopperStandIn())
    configs.device_name = lambda device: DEVICE_NAME  # its tuned table, where one is stored
    run = JITFunction.run

    def compile_run(self, *args, grid, warmup, **kwargs):
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        md = kernel.metadata
        record.append({
            "case": CASE[0], "kernel": self.fn.__name__, "num_warps": md.num_warps,
            "num_stages": md.num_stages, "shared": md.shared, "target": md.target.arch,
            "constexprs": {k: str(v) for k, v in kwargs.items() if k.isupper()},
            "ptx": kernel.asm["ptx"],
        })

    JITFunction.run = compile_run


CASE = ["-"]  # the case being compiled, for the records


# --- the cases: each runs the host code of one GPU path at Rio's shapes -------------------------

def moe_case(T: int, I: int, wdtype: str, *, ep: bool = False, config=None, act_quant=False,
             small_t: bool | None = None) -> Callable[[], None]:
    def run() -> None:
        from rio_kernels.fused_moe import fp8
        from rio_kernels.fused_moe.kernel import fused_moe
        from rio_kernels.fused_moe.routing import ep_expert_map

        x = torch.empty(T, H, dtype=torch.bfloat16)
        w13 = torch.empty(E, 2 * I, H, dtype=torch.bfloat16)
        w2 = torch.empty(E, H, I, dtype=torch.bfloat16)
        e_global = 8 * E if ep else E
        ids = torch.randint(0, e_global, (T, TOPK), generator=torch.Generator().manual_seed(T))
        weights = torch.full((T, TOPK), 1.0 / TOPK)
        extra: dict = {}
        if wdtype != "bf16":
            block = (128, 128) if wdtype == "fp8-block" else None
            shape13, shape2 = fp8.scale_shape(w13.shape, block), fp8.scale_shape(w2.shape, block)
            w13, w2 = w13.to(fp8.FP8), w2.to(fp8.FP8)
            extra = {"w13_scale": torch.ones(shape13), "w2_scale": torch.ones(shape2),
                     "block_shape": block, "act_quant": act_quant}
        emap = ep_expert_map(e_global, 0, 8) if ep else None
        fused_moe(x, w13, w2, weights, ids, expert_map=emap, config=config, small_t=small_t,
                  **extra)
    return run


def flag_on(module: str, flag: str, run: Callable[[], None]) -> Callable[[], None]:
    """run with the bool rio_kernels.<module>.<flag> set (an opt-in GPU path)."""
    def flagged() -> None:
        import importlib

        from rio_kernels.benchmark import flag_set

        with flag_set(importlib.import_module(f"rio_kernels.{module}"), flag, True):
            run()
    return flagged


def step_case(B: int, dtype: torch.dtype, topk: bool = False, tiles=None) -> Callable[[], None]:
    """The reasoning step over B rows at one TP 8 rank's vocab shard (half latent, half switch);
    tiles: the mixture's (launch.MixTiles), else the GPU default."""
    def run() -> None:
        from rio_kernels.swir_step import launch
        from rio_kernels.swir_step.bench_swir_step import TOKENS
        from rio_sglang.reasoning.device import DeviceStep
        from rio_sglang.reasoning.spec import ReasoningSpec

        v_len = V // 8
        table = torch.empty(v_len, H, dtype=dtype)
        step = DeviceStep(256, TOKENS, V, table, 0, v_len, torch.empty(3, H, dtype=dtype))
        specs = [ReasoningSpec(mode="latent" if i % 2 else "switch",
                               soft_topk=8 if topk else None) for i in range(B)]
        step.reset(list(range(B)), specs, [1 << 20] * B)
        rows = torch.arange(B)
        if tiles is not None:  # the mixture alone, with these tiles
            launch.pre_sample(torch.empty(B, V), rows, rows, step.tables, table, 0, v_len, V,
                              tiles=tiles)
            return
        step.post(step.pre(torch.empty(B, V), rows, rows), torch.zeros(B, dtype=torch.long))
    return run


def cases() -> dict[str, Callable[[], None]]:
    from rio_kernels.fused_moe.configs import GPU_CONFIGS
    from rio_kernels.swir_step.tune import CANDIDATES as STEP_CANDIDATES

    out = {}
    for T in (1, 8, 64):
        out[f"moe bf16 TP8 T={T}"] = moe_case(T, I_TP8, "bf16")
        out[f"moe fp8-block TP8 T={T}"] = moe_case(T, I_TP8, "fp8-block")
    out["moe fp8-channel TP8 T=8"] = moe_case(8, I_TP8, "fp8-channel")
    out["moe bf16 TP1 T=1"] = moe_case(1, I_TP1, "bf16")
    out["moe fp8-block TP1 T=1"] = moe_case(1, I_TP1, "fp8-block")
    out["moe bf16 EP8 T=1"] = moe_case(1, I_TP1, "bf16", ep=True)
    for limit, cfg in GPU_CONFIGS:  # every built-in grouped tile (no tuned tables are stored)
        for w in ("bf16", "fp8-block"):
            out[f"moe {w} TP1 T=4096 grouped {cfg}"] = moe_case(4096, I_TP1, w, config=cfg)
    out["moe fp8-block w8a8 TP8 T=4096"] = moe_case(4096, I_TP8, "fp8-block", act_quant=True)
    out["moe fp8-channel w8a8 TP1 T=4096"] = moe_case(4096, I_TP1, "fp8-channel", act_quant=True)
    out["moe bf16 EP8 T=4096"] = moe_case(4096, I_TP1, "bf16", ep=True)
    out["moe bf16 TP8 T=64 grouped"] = moe_case(64, I_TP8, "bf16", small_t=False)
    for T, I, w in ((1, I_TP8, "bf16"), (1, I_TP1, "bf16"), (8, I_TP8, "fp8-block")):
        out[f"moe {w} I={I} T={T} PDL"] = flag_on("fused_moe.small_t", "PDL", moe_case(T, I, w))
    for B in (1, 8, 64):
        out[f"step bf16 B={B}"] = step_case(B, torch.bfloat16)
    out["step bf16 B=8 soft_topk"] = step_case(8, torch.bfloat16, topk=True)
    out["step fp16 B=8"] = step_case(8, torch.float16)
    for B in (8, 64):
        for flag in ("COPY_LOGITS", "PDL"):
            out[f"step bf16 B={B} {flag}"] = flag_on("swir_step.launch", flag,
                                                     step_case(B, torch.bfloat16))
    for tiles in STEP_CANDIDATES:  # the sweep's mixtures in 2-4 row blocks (64 rows)
        if tiles.block_r < 64:
            out[f"step mixture B=64 {tiles}"] = step_case(64, torch.bfloat16, tiles=tiles)
    return out


def sweep_cases() -> dict[str, Callable[[], None]]:
    """The GPU sweeps' candidates (swir_step/tune.py, fused_moe/sweep_small_t.py): a sweep skips
    the ones a card refuses, so these are reported, not failed; with the device machines' Triton
    (see `--help`) the shared-memory figures are the device's."""
    from rio_kernels.fused_moe import small_t
    from rio_kernels.fused_moe.sweep_small_t import DOWN, GATE_UP
    from rio_kernels.swir_step.tune import CANDIDATES, STATS_CANDIDATES

    out = {}
    for tiles in CANDIDATES:
        for B in (8, 64):
            out[f"sweep mixture B={B} {tiles}"] = step_case(B, torch.bfloat16, tiles=tiles)
    for tiles in STATS_CANDIDATES:
        out[f"sweep stats B=64 {tiles}"] = stats_case(64, tiles)
    for kind, candidates in (("gate_up", GATE_UP), ("down", DOWN)):
        for tiles in candidates:
            def run(kind=kind, tiles=tiles) -> None:
                saved = small_t.TILES[kind, 1]
                small_t.TILES[kind, 1] = tiles
                try:
                    moe_case(8, I_TP8, "fp8-block")()
                finally:
                    small_t.TILES[kind, 1] = saved
            out[f"sweep fp8 small-T {kind} {tiles}"] = run
    return out


def stats_case(B: int, tiles) -> Callable[[], None]:
    """The stats pass alone with these tiles (launch.StatsTiles)."""
    def run() -> None:
        from rio_kernels.swir_step import launch
        from rio_kernels.swir_step.bench_swir_step import TOKENS
        from rio_sglang.reasoning.device import DeviceStep

        table = torch.empty(8, H, dtype=torch.bfloat16)
        step = DeviceStep(256, TOKENS, V, table, 0, 8, table[:3])
        rows = torch.arange(B)
        launch.row_stats(torch.empty(B, V), rows, rows, step.tables, V, torch.bfloat16,
                         tiles=tiles)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=(
        "The device machines run Triton 3.6: `pip install --target DIR --no-deps triton==3.6.0`"
        " and PYTHONPATH=DIR compile with it, and give its shared-memory figures."))
    p.add_argument("--json", help="write the records (with each kernel's PTX) here")
    p.add_argument("--sweeps", action="store_true",
                   help="also every candidate of the GPU sweeps (reported, never failed)")
    args = p.parse_args(argv)
    records: list[dict] = []
    compile_only(records)
    todo = cases()
    n_gated = len(todo)
    if args.sweeps:
        todo |= sweep_cases()
    for i, (name, run) in enumerate(todo.items()):
        CASE[0] = name
        start = len(records)
        run()
        for r in records[start:]:
            r["gated"] = i < n_gated
    import triton

    for r in records:
        flag = "" if r["shared"] <= SMEM_LIMIT else "  OVER sm_90's shared memory"
        print(f"sm_{r['target']} {r['case']}: {r['kernel']} warps {r['num_warps']} stages "
              f"{r['num_stages']} shared {r['shared']} B {r['constexprs']}{flag}")
    print(f"{len(records)} launches compiled for sm_{TARGET[0]} by Triton {triton.__version__}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f)
    return 0 if all(r["shared"] <= SMEM_LIMIT for r in records if r["gated"]) else 1


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)  # before triton reads it
    sys.exit(main())

"""Tune the grouped (prefill) path's tiles on this GPU and write configs/<device>.json (configs.py).

python -m rio_kernels.fused_moe.tune [--tp 1 8] [--tokens 128 512 2048 4096 16384] [--out DIR]
Per (I, weight dtype) and T: times each candidate tile on the grouped path (E=512, top-10,
H=4096, bf16 activations; FP8 = e4m3 with 128 x 128 block scales), keeps the fastest one whose
output matches fused_moe_ref, and writes rows with T_max at the geometric midpoints between the
tuned T. A few minutes on an H100. Copy the file into kernels/fused_moe/configs/ to use it.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import time

import torch

from . import bench_fused_moe as bench
from .configs import MoeConfig, table_key, table_path
from .kernel import fused_moe
from .ref import fused_moe_ref
from .routing import route_topk

CANDIDATES = [  # (block_m, block_n, block_k, num_warps, num_stages)
    (16, 64, 128, 4, 3), (32, 64, 128, 4, 3), (64, 64, 64, 4, 3), (64, 128, 64, 4, 3),
    (64, 128, 64, 8, 4), (128, 64, 64, 4, 4), (128, 128, 64, 8, 3), (128, 128, 64, 8, 4),
]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tp", type=int, nargs="+", default=[1, 8])
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 512, 2048, 4096, 16384])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    return p.parse_args(argv)


def tune_one(x, weights, tw, ids, ref, scales) -> tuple[MoeConfig, float, list]:
    """Fastest right candidate: (config, ms, every trial)."""
    from triton.testing import do_bench

    best, trials = None, []
    for tiles in CANDIDATES:
        cfg = MoeConfig(*tiles)
        fn = functools.partial(fused_moe, x, *weights, tw, ids, config=cfg, small_t=False,
                               **scales)
        ok = torch.allclose(fn().float(), ref, **bench.TOL)
        ms = do_bench(fn, return_mode="median") if ok else float("inf")
        trials.append({"tiles": tiles, "ok": ok, "ms": ms})
        if ok and (best is None or ms < best[1]):
            best = (cfg, ms)
    if best is None:
        raise RuntimeError(f"no candidate tile matches the reference: {trials}")
    return best[0], best[1], trials


def main(argv=None) -> int:
    args = parse_args(argv)
    if bench.DEVICE == "cuda" and not torch.cuda.is_available():
        print(bench.NO_GPU, file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name() if bench.DEVICE == "cuda" else bench.DEVICE
    tables, log = {}, []
    tokens = sorted(args.tokens)
    limits = [round((a * b) ** 0.5) for a, b in itertools.pairwise(tokens)] + tokens[-1:]
    for tp in args.tp:
        inter = bench.I_FULL // tp
        experts = bench.make_experts(inter, seed=tp)
        (w13, q13, s13), (w2, q2, s2) = experts["13"], experts["2"]
        variants = {bench.ACT: ((w13, w2), {}),
                    bench.fp8.FP8: ((q13, q2), {"w13_scale": s13, "w2_scale": s2,
                                                "block_shape": bench.BLOCK})}
        for T, t_max in zip(tokens, limits):
            g = torch.Generator(device=bench.DEVICE).manual_seed(T)
            x = torch.randn(T, bench.H, device=bench.DEVICE, generator=g).to(bench.ACT)
            tw, ids = route_topk(torch.randn(T, bench.E, device=bench.DEVICE, generator=g), bench.TOPK)
            ref = fused_moe_ref(x, w13, w2, tw, ids).float()
            for wdtype, (weights, scales) in variants.items():
                cfg, ms, trials = tune_one(x, weights, tw, ids, ref, scales)
                key = table_key(bench.E, inter, wdtype)
                tables.setdefault(key, []).append([t_max, list(cfg.__dict__.values())])
                log.append({"key": key, "T": T, "best": cfg.__dict__, "ms": ms, "trials": trials})
                print(json.dumps(log[-1]), flush=True)
        del experts
        if bench.DEVICE == "cuda":
            torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    path = table_path(device, args.out)
    with open(path, "w") as f:
        json.dump({"device": device, "date": time.strftime("%Y-%m-%d"), "tables": tables}, f,
                  indent=1)
    with open(os.path.join(args.out, "tune_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

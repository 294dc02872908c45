"""`bench_fused_moe --sweep-fp8`: times candidate small-T tiles for FP8 weights (small_t.TILES,
e4m3 rows) at TP 8 shapes, T = 1, 8, 32, under CUDA graphs, and names the best.

Coordinate descent in one short run: the gate-up candidates with the default down tiles, then
the down candidates with the best gate-up tiles. A candidate's score is the mean over T of its
time over the default's; every candidate is checked against the reference before it is timed
(Bench.measure). The defaults are restored afterwards; the printed lines say what to set.
"""

from __future__ import annotations

import functools

import torch

from . import small_t
from .kernel import fused_moe, moe_flops_bytes
from .ref import fused_moe_ref
from .routing import route_topk
from .small_t import GemvTiles

SWEEP_T = (1, 8, 32)
GATE_UP = (  # the default first (small_t.TILES), then one change at a time
    GemvTiles(programs=1024, tile_bytes=65536, max_block_n=16, num_warps=4),
    GemvTiles(programs=1024, tile_bytes=32768, max_block_n=16, num_warps=2),
    GemvTiles(programs=1024, tile_bytes=32768, max_block_n=16, num_warps=8),
    GemvTiles(programs=2048, tile_bytes=32768, max_block_n=16, num_warps=4),
)
DOWN = (
    GemvTiles(programs=256, tile_bytes=32768, max_block_n=64, num_warps=4),
    GemvTiles(programs=128, tile_bytes=32768, max_block_n=64),
    GemvTiles(programs=512, tile_bytes=32768, max_block_n=64),
    GemvTiles(programs=256, tile_bytes=16384, max_block_n=64),
)


def sweep_fp8(b, experts: dict, layout: str, E: int, topk: int, H: int) -> list[str]:
    """Times the candidates on `experts` (bench_fused_moe.make_experts); returns summary lines."""
    (w13, q13, s13), (w2, q2, s2) = experts["13"], experts["2"]
    inter, device = w2.shape[2], w2.device
    cases = {}
    for T in SWEEP_T:
        g = torch.Generator(device=device).manual_seed(1000 + T)
        x = torch.randn(T, H, device=device, generator=g).to(w13.dtype)
        tw, ids = route_topk(torch.randn(T, E, device=device, generator=g), topk)
        ref = fused_moe_ref(x, w13, w2, tw, ids).float()
        fn = functools.partial(fused_moe, x, q13, q2, tw, ids, w13_scale=s13, w2_scale=s2,
                               block_shape=(128, 128), small_t=True)
        cases[T] = (fn, ref, *moe_flops_bytes(T, H, inter, E, topk, 2, 1, (128, 128)))
    saved = dict(small_t.TILES)
    lines = [(f"fp8 small-T tile sweep, {layout}, T={list(SWEEP_T)} (ms under CUDA graphs, "
              "fraction of the copy ceiling in fp8 bytes):")]
    try:
        for kind, candidates in (("gate_up", GATE_UP), ("down", DOWN)):
            default = small_t.TILES[kind, 1]
            scored = []
            for cand in (default, *candidates):
                small_t.TILES[kind, 1] = cand
                times = []
                for T, (fn, ref, flops, nbytes) in cases.items():
                    row = b.measure({"layout": layout, "T": T, "kernel": f"fp8 sweep {kind}",
                                     "tiles": repr(cand)}, fn, ref, flops, nbytes, True, keep=False)
                    times.append((row.get("ms", float("inf")), row.get("frac", 0.0)))
                scored.append((times, cand))
                cells = ", ".join(f"T={T} {ms:.4f} ({frac:.2f})"
                                  for T, (ms, frac) in zip(cases, times))
                lines.append(f"  {kind} {cand}: {cells}")
            base = scored[0][0]
            best = min(scored, key=lambda s: sum(ms / b_ms for (ms, _), (b_ms, _) in
                                                 zip(s[0], base)) / len(base))
            small_t.TILES[kind, 1] = best[1]
            lines.append(f"  best {kind}: small_t.TILES[{kind!r}, 1] = {best[1]}")
    finally:
        small_t.TILES.update(saved)
    return lines

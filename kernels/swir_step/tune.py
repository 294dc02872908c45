"""Tuning and profiling for bench_swir_step.py (its --sweep and --parts flags): tile
candidates for the step's stats pass and mixture, timed at Rio's shapes on one GPU, and where a
step's GPU time goes. SGLang-free."""

from __future__ import annotations

import functools

import torch
from triton.runtime.errors import OutOfResources

from rio_kernels.swir_step import bench_swir_step as brs
from rio_kernels.swir_step import launch
from rio_kernels.swir_step.ref import lse_entropy_ref, mix_ref

# The 2026-11-27 H200 sweep's best per bucket (bench/RESULTS.md), and neighbours of them.
CANDIDATES = [launch.MixTiles(*c) for c in (
    (128, 64, 4, 3, 528), (128, 64, 4, 3, 264), (128, 128, 4, 3, 528), (128, 128, 4, 3, 264),
    (128, 64, 8, 3, 1056), (256, 64, 8, 3, 264), (256, 128, 8, 3, 264),
    # after the 2026-11-27 H100 sweep: fewer programs, shallower vocab blocks, narrower H
    (128, 64, 4, 3, 132), (128, 64, 4, 4, 264), (128, 32, 4, 3, 264), (64, 64, 4, 3, 264),
    (256, 64, 4, 3, 132),
    # around the second H200 sweep's best for 32-64 rows (128 x 32, target 264)
    (128, 32, 4, 2, 264), (128, 32, 4, 4, 264), (128, 32, 4, 3, 528), (128, 16, 4, 3, 264),
    (128, 32, 8, 3, 264), (256, 32, 8, 3, 264),
    # 32-64 rows as 2-4 row blocks side by side (one table read from HBM, the rest from L2):
    # 32 rows cost as much as 64 in the single-block tiles (2026-11-27 sweeps), 16 barely more
    # than 1
    (128, 64, 4, 3, 528, 16), (128, 64, 4, 3, 1056, 16), (128, 32, 4, 3, 528, 16),
    (128, 64, 4, 3, 528, 32), (128, 32, 4, 3, 264, 32))]


STATS_CANDIDATES = [launch.StatsTiles(*c) for c in (
    (2048, 1024, 4), (1024, 1024, 4), (4096, 1024, 4), (4096, 2048, 8), (8192, 2048, 8),
    (2048, 2048, 8),
    # one load per program, more of it in flight (the one-exp stats pass)
    (4096, 4096, 8), (4096, 4096, 16), (8192, 8192, 16), (2048, 2048, 4), (1024, 1024, 8))]


def _best_per_bucket(buckets, candidates, time_candidate, chosen: dict, name: str,
                     skip: tuple = ()) -> None:
    """For each (bucket, row counts): time every candidate (time_candidate(tiles, bucket,
    counts) -> summed ms); the fastest becomes chosen[bucket]. Exceptions in `skip` drop the
    candidate, named."""
    for bucket, counts in buckets:
        best = None
        for tiles in candidates:
            try:
                total = time_candidate(tiles, bucket, counts)
            except skip as err:  # e.g. 256 x 128 mixture tiles at 64 rows on an H100
                print(f"sweep: {tiles} skipped at bucket {bucket}: {err}", flush=True)
                continue
            if best is None or total < best[0]:
                best = (total, tiles)
        chosen[bucket] = best[1]
        print(f"sweep: {name}bucket <= {bucket} rows -> {best[1]}", flush=True)


def sweep_stats(ceiling: float) -> list[dict]:
    """The stats pass's tiles at each bucket's row counts (its checks: lse and entropy against
    the fp32 reference); the fastest per bucket becomes `launch.STATS_TILES`."""
    out = []

    def time_stats(tiles: launch.StatsTiles, bucket: int, counts: tuple[int, ...]) -> float:
        total = 0.0
        for B in counts:
            step, slots = brs.build(B, "explicit", torch.zeros(8, brs.H, device="cuda"),
                                    0, 8, "cuda")
            logits = torch.randn(B, brs.V, device="cuda") * 4
            rows = torch.arange(B, device="cuda")
            args = (logits, rows, slots, step.tables, brs.V, torch.bfloat16)
            row = launch.row_stats(*args, tiles=tiles)[3]
            lse, ent = lse_entropy_ref(logits, torch.bfloat16)
            assert torch.allclose(row, torch.stack([lse, ent], 1), atol=1e-3, rtol=1e-4), tiles
            ms = brs.graphed_ms(functools.partial(launch.row_stats, *args, tiles=tiles))
            out.append({"bucket": bucket, "B": B, "stats_tiles": tiles.__dict__,
                        "graph_ms": ms,
                        "fraction": B * brs.V * 4 / (ms * 1e-3) / (ceiling * 1e9)})
            print(f"sweep B {B:>2} {tiles} {ms * 1e3:7.1f} us frac {out[-1]['fraction']:.2f}",
                  flush=True)
            total += ms
        return total

    _best_per_bucket(((16, (1, 8)), (64, (32, 64))), STATS_CANDIDATES, time_stats,
                     launch.STATS_TILES, "stats, ")
    return out


def sweep(table: torch.Tensor, ceiling: float) -> list[dict]:
    """The mixture's tiles: every candidate at each bucket's row counts, all rows latent, on
    one rank's TP 8 shard; the fastest per bucket (by the sum over its row counts) becomes
    `launch.GPU_TILES` for the table that follows. Candidates the card cannot launch (shared
    memory) are skipped and named."""
    v_len = brs.V // brs.TP8
    shard = table[:v_len]
    out = []

    def time_mix(tiles: launch.MixTiles, bucket: int, counts: tuple[int, ...]) -> float:
        return _time_mix(tiles, counts, bucket, shard, v_len, ceiling, out)

    _best_per_bucket(((16, (1, 8, 16)), (64, (32, 64))), CANDIDATES, time_mix,
                     launch.GPU_TILES, "", skip=(OutOfResources,))
    return out


def _time_mix(tiles: launch.MixTiles, counts: tuple[int, ...], bucket: int,
              shard: torch.Tensor, v_len: int, ceiling: float, out: list[dict]) -> float:
    """One candidate, checked against the reference, then graphed at each row count (rows
    appended to out); returns the sum of its times."""
    dev = shard.device
    total = 0.0
    for B in counts:
        step, slots = brs.build(B, "latent", shard, 0, v_len, dev)
        logits = torch.randn(B, brs.V, device=dev) * 4
        rows = torch.arange(B, device=dev)
        pre = launch.pre_sample(logits, rows, slots, step.tables, shard, 0, v_len, brs.V,
                                tiles=tiles)
        want = mix_ref(logits, shard, 0, v_len)
        err = (pre.partials.sum(0) - want).abs().max().item()
        assert err <= 1e-3 * want.abs().max().item() + 1e-6, (tiles, B, err)
        args = (logits, rows, slots, step.tables, shard, 0, v_len, brs.V)
        ms = brs.graphed_ms(functools.partial(launch.pre_sample, *args, tiles=tiles))
        out.append({"bucket": bucket, "B": B, "tiles": tiles.__dict__, "graph_ms": ms,
                    "fraction": v_len * brs.H * 2 / (ms * 1e-3) / (ceiling * 1e9)})
        print(f"sweep B {B:>2} {tiles} {ms * 1e3:7.1f} us frac {out[-1]['fraction']:.2f}",
              flush=True)
        total += ms
    return total


def parts(table: torch.Tensor) -> list[dict]:
    """Where the step's GPU time goes (graphed, TP 8 shard): the stats launch alone, stats +
    mixture, the whole step; and the floor of 1 and 3 empty Triton launches in one graph."""
    import triton
    import triton.language as tl

    @triton.jit
    def _noop(x_ptr):
        tl.store(x_ptr + tl.program_id(0), 1)

    dev = table.device
    x = torch.zeros(1024, dtype=torch.int32, device=dev)
    one, many = _noop[(1,)], _noop[(528,)]
    out = [{"part": "1 empty launch", "graph_ms": brs.graphed_ms(functools.partial(one, x))},
           {"part": "3 empty launches", "graph_ms": brs.graphed_ms(brs._repeat(one, x))},
           {"part": "3 launches of 528 programs",
            "graph_ms": brs.graphed_ms(brs._repeat(many, x))}]
    v_len = brs.V // brs.TP8
    shard = table[:v_len]
    for B in (1, 8, 64):
        for mix in ("explicit", "latent"):
            step, slots = brs.build(B, mix, shard, 0, v_len, dev)
            logits = torch.randn(B, brs.V, device=dev) * 4
            rows = torch.arange(B, device=dev)
            tokens = torch.randint(100, 1000, (B,), device=dev)
            t_stats = brs.graphed_ms(functools.partial(launch.row_stats, logits, rows, slots,
                                                   step.tables, brs.V, shard.dtype))
            t_pre = brs.graphed_ms(functools.partial(step.pre, logits, rows, slots))
            t_all = brs.graphed_ms(functools.partial(brs._whole_step, step, logits, rows, slots,
                                                     tokens))
            out.append({"part": f"B {B} {mix}", "stats_ms": t_stats, "mix_ms": t_pre - t_stats,
                        "update_ms": t_all - t_pre, "graph_ms": t_all})
    for r in out:
        print("parts " + " ".join(f"{k} {v * 1e3:.1f} us" if k.endswith("_ms") else str(v)
                                  for k, v in r.items()), flush=True)
    return out



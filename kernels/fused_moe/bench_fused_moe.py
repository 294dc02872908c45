"""Time fused_moe at Rio's shapes (E=512, top-10, H=4096): bf16 and FP8 (e4m3, 128 x 128 block
scales, w8a16) weights side by side, the small-T and grouped paths, CUDA graphs for decode
sizes (T=1 also eager), eager prefill, the align alone, and torch._grouped_mm as a torch-native
anchor; on the grouped path also FP8 w8a8 (act_quant: e4m3 activations per 128-wide token
group, fp8 tensor cores) and its TFLOP/s over bf16's; at prefill sizes also FP8 w8a16 with its
block scales placed the other way (grouped.SCALE_DOTS flipped). GPU only.

python -m rio_kernels.fused_moe.bench_fused_moe [--tokens 1 8 32 64 4096] [--tp 8 1] [--out DIR]
    [--sweep-fp8]  (also times candidate FP8 small-T tiles at TP 8: sweep_small_t.py)
Every kernel is checked against fused_moe_ref on its inputs before it is timed (WRONG rows are
not timed; w8a8 rows normwise, see ref.w8a8_errors). The align share is its GPU time (graph)
over the bf16 call's. Rows stream to stdout as JSON; DIR gets bench_fused_moe.json and .md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import torch

from ..benchmark import copy_ceiling_gbs, flag_set, matmul_peak_tflops, roofline_ms
from . import align, fp8, grouped, small_t
from .kernel import fused_moe, moe_flops_bytes, pick_config
from .ref import fused_moe_ref, w8a8_errors
from .routing import ep_expert_map, route_topk
from .small_t import SMALL_T_MAX_PAIRS, TILES, max_pairs
from .sweep_small_t import sweep_fp8

DEVICE, ACT = "cuda", torch.bfloat16  # a CPU smoke run of this script may change both
E, TOPK, H, I_FULL = 512, 10, 4096, 1024
BLOCK = (128, 128)
TOKENS = (1, 8, 32, 64, 4096)
GRAPH_MAX_T = 64  # decode sizes: timed under CUDA graphs (T=1 also eager: launch overhead)
BOTH_PATHS_T = (8, 32, 64)  # also timed on the path the bound does not pick
ANCHOR_T = (1, 64, 4096)  # torch._grouped_mm timed at these T
TOL = {"atol": 3e-2, "rtol": 3e-2}
OTHER_PLACEMENT = f"fp8, scales on the {'tiles' if grouped.SCALE_DOTS else 'dots'}"
NO_GPU = ("bench_fused_moe needs a CUDA GPU. On CPU run the tests instead: "
          "python -m pytest kernels/fused_moe")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    p.add_argument("--tp", type=int, nargs="+", default=[8, 1])
    p.add_argument("--long-tokens", type=int, nargs="*", default=[16384],
                   help="extra prefill sizes, TP 8 only (align share reported)")
    p.add_argument("--ep-tokens", type=int, nargs="*", default=[],
                   help="T for the EP 8 layout (64 local experts of I=1024, an expert map)")
    p.add_argument("--no-anchor", action="store_true", help="skip torch._grouped_mm")
    p.add_argument("--sweep-fp8", action="store_true",
                   help="time candidate FP8 small-T tiles at TP 8, T=1/8/32 (sweep_small_t.py)")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    return p.parse_args(argv)


def make_experts(inter: int, seed: int, chunk: int = 32):
    """{"13": (w, q, s), "2": (w, q, s)}: bf16 weights, and e4m3 + block scales of the same experts.

    The bf16 weights are the dequantized FP8 ones, so one reference serves both dtypes.
    """
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    shapes = {"13": (E, 2 * inter, H), "2": (E, H, inter)}
    out = {}
    for name, shape in shapes.items():
        w = torch.empty(shape, dtype=ACT, device=DEVICE)
        q = torch.empty(shape, dtype=fp8.FP8, device=DEVICE)
        s = torch.empty(fp8.scale_shape(shape, BLOCK), device=DEVICE)
        for e0 in range(0, E, chunk):
            part = torch.randn((chunk, *shape[1:]), device=DEVICE, generator=g) * shape[2] ** -0.5
            q[e0:e0 + chunk], s[e0:e0 + chunk] = fp8.quantize_block(part, BLOCK)
            w[e0:e0 + chunk] = fp8.dequantize(q[e0:e0 + chunk], s[e0:e0 + chunk], BLOCK, w.dtype)
        out[name] = (w, q, s)
    return out


def grouped_mm_moe(x, w13, w2, topk_weights, topk_ids):
    """The same MoE on torch._grouped_mm (sort pairs by expert, two grouped GEMMs, index_add)."""
    num_e, inter = w13.shape[0], w2.shape[2]
    flat = topk_ids.reshape(-1).long()  # [P]
    order = torch.argsort(flat, stable=True)  # [P]
    offs = torch.cumsum(torch.bincount(flat, minlength=num_e), 0).to(torch.int32)  # [E]
    token = order // TOPK  # [P]
    h = torch._grouped_mm(x[token], w13.transpose(1, 2), offs=offs)  # [P, 2I]
    h = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]  # [P, I]
    y = torch._grouped_mm(h, w2.transpose(1, 2), offs=offs)  # [P, H]
    y = y.float() * topk_weights.reshape(-1)[order, None]  # [P, H]
    return torch.zeros_like(x, dtype=torch.float32).index_add_(0, token, y).to(x.dtype)


class Bench:
    """Checks then times one callable per row; keeps every row for the JSON and the table."""

    def __init__(self, out_dir: str):
        from triton.testing import do_bench, do_bench_cudagraph

        self.eager, self.graph = do_bench, do_bench_cudagraph
        self.out_dir, self.rows = out_dir, []
        self.ceiling = copy_ceiling_gbs(DEVICE)
        # the roofline's compute roofs: bf16 (bf16 and w8a16 rows) and e4m3 (w8a8 rows)
        self.peaks = {dtype: _peak(dtype) for dtype in (torch.bfloat16, fp8.FP8)}
        device = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
        self.meta = {"device": device, "torch": torch.__version__,
                     "date": time.strftime("%Y-%m-%d"), "copy_ceiling_gbs": self.ceiling,
                     "matmul_tflops": {str(k): v for k, v in self.peaks.items()},
                     "E": E, "topk": TOPK, "H": H, "fp8_block": BLOCK,
                     "small_t_max_pairs": SMALL_T_MAX_PAIRS, "fp8_scale_dots": grouped.SCALE_DOTS,
                     "small_t_pdl": small_t.PDL,
                     "small_t_tiles": {f"{k} {b}B": repr(v) for (k, b), v in TILES.items()}}
        self.sweep: list[str] = []  # sweep_small_t's summary lines
        print(json.dumps(self.meta), flush=True)

    def measure(self, row: dict, fn, ref, flops: float, nbytes: float, graph: bool,
                ref_a16=None, keep: bool = True) -> dict:
        """Checks fn() against ref, then times it; keep: a row of the table (else JSON only).
        ref_a16: w8a8 rows, the w8a16 reference; checked normwise (ref.w8a8_errors)."""
        out = fn().float()
        err = (out - ref).abs().max().item()
        row.update(mode="graph" if graph else "eager", max_err=err,
                   ok=bool(torch.allclose(out, ref, **TOL)))
        if ref_a16 is not None:
            row.update(w8a8_errors(out, ref, ref_a16))
        if row["ok"]:
            bench = self.graph if graph else self.eager
            ms = bench(fn, return_mode="median")
            peak = self.peaks[fp8.FP8 if ref_a16 is not None else torch.bfloat16]
            row.update(ms=ms, tflops=flops / ms / 1e9, gbs=nbytes / ms / 1e6,
                       frac=nbytes / ms / 1e6 / self.ceiling,
                       roof=roofline_ms(flops, nbytes, self.ceiling, peak) / ms if peak else None)
        if keep:
            self.rows.append(row)
        print(json.dumps(row), flush=True)
        self.save()
        return row

    def save(self) -> None:
        with open(os.path.join(self.out_dir, "bench_fused_moe.json"), "w") as f:
            json.dump({**self.meta, "rows": self.rows, "sweep": self.sweep}, f, indent=1)
        with open(os.path.join(self.out_dir, "bench_fused_moe.md"), "w") as f:
            f.write(markdown(self.meta, self.rows, self.sweep))


def _peak(dtype: torch.dtype) -> float | None:
    """matmul_peak_tflops, or None where this torch or device cannot run the GEMM."""
    try:
        return matmul_peak_tflops(dtype, device=DEVICE)
    except (RuntimeError, TypeError) as e:
        print(f"no {dtype} matmul rate ({e}): its rows get no roofline fraction", flush=True)
        return None


def markdown(meta: dict, rows: list[dict], sweep: list[str] = ()) -> str:
    peaks = ", ".join(f"{k.removeprefix('torch.')} {v:.0f}" for k, v in
                      meta.get("matmul_tflops", {}).items() if v)
    head = (f"{meta['device']}, {meta['date']}, copy ceiling {meta['copy_ceiling_gbs']:.0f} GB/s,"
            f" matmul TFLOP/s {peaks or '-'}, E={E} top-{TOPK} H={H}, fp8 = e4m3 weights + "
            f"{BLOCK} block scales (w8a16); fp8 w8a8 = also e4m3 activations, {BLOCK[1]}-wide "
            f"token groups (grouped path), checked normwise (ref.w8a8_errors); align share = "
            f"align ms / the bf16 call's; roofline = max(bytes / copy ceiling, FLOPs / matmul "
            f"rate) over ms (e4m3 rate for w8a8 rows, bf16 for the others)")
    cols = ("layout", "T", "kernel", "path", "mode", "ms", "fraction of copy ceiling",
            "TFLOP/s", "fraction of roofline")
    lines = [head, "", f"| {' | '.join(cols)} |", "|" + " --- |" * len(cols)]
    for r in rows:
        if "ms" in r:
            roof = f"{r['roof']:.2f}" if r.get("roof") else "-"
            cells = f"{r['ms']:.4f} | {r['frac']:.2f} | {r['tflops']:.1f} | {roof}"
        elif "refused" in r:
            cells = f"REFUSED ({r['refused']}) | - | - | -"
        elif "share" in r:
            cells = f"{r['align_ms']:.4f} | share of the call {r['share']:.2f} | - | -"
        else:
            norm = f", to_a8 {r['to_a8']:.2f}, to_a16 {r['to_a16']:.2f}" if "to_a8" in r else ""
            cells = f"WRONG (max err {r['max_err']:.3g}{norm}) | - | - | -"
        lines.append(f"| {r['layout']} | {r['T']} | {r['kernel']} | {r.get('path', '-')} "
                     f"| {r.get('mode', 'eager')} | {cells} |")
    ratios = (speedups(rows, "fp8 w8a8", "bf16", "w8a8 / bf16")
              + speedups(rows, OTHER_PLACEMENT, "fp8", f"{OTHER_PLACEMENT} / fp8")
              + pdl_ratios(rows))
    return "\n".join(lines + [""] + ratios + list(sweep)) + "\n"


def speedups(rows: list[dict], kernel: str, over: str, name: str) -> list[str]:
    """One line per `kernel` row: its TFLOP/s over the `over` grouped row of the same layout and T."""
    base = {(r["layout"], r["T"]): r for r in rows
            if r["kernel"] == over and r.get("path") == "grouped" and "ms" in r}
    lines = []
    for r in rows:
        b = base.get((r["layout"], r["T"]))
        if r["kernel"] == kernel and "ms" in r and b:
            lines.append(f"{name} TFLOP/s, {r['layout']} T={r['T']}: "
                         f"{r['tflops'] / b['tflops']:.2f}")
    return lines


def run_layout(b: Bench, layout: str, experts: dict, tokens, anchor: bool, emap=None) -> None:
    (w13, q13, s13), (w2, q2, s2) = experts["13"], experts["2"]
    num_e, inter = w13.shape[0], w2.shape[2]
    ep = E // num_e
    for T in tokens:
        g = torch.Generator(device=DEVICE).manual_seed(T)
        x = torch.randn(T, H, device=DEVICE, generator=g).to(ACT)
        tw, ids = route_topk(torch.randn(T, E, device=DEVICE, generator=g), TOPK)
        ref = fused_moe_ref(x, w13, w2, tw, ids, expert_map=emap).float()
        paths = {wb: [T * TOPK <= max_pairs(inter, wb)] for wb in (1, 2)}  # by weight bytes
        paths = {wb: p + ([not p[0]] if T in BOTH_PATHS_T else []) for wb, p in paths.items()}
        call_ms = None
        fp8_kw = {"w13_scale": s13, "w2_scale": s2, "block_shape": BLOCK}
        refs = {False: ref}  # by act_quant; w8a8's reference computed when first needed
        for kernel, (a, b_, kw, wb) in {
            "bf16": (w13, w2, {}, None),
            "fp8": (q13, q2, fp8_kw, 1),
            "fp8 w8a8": (q13, q2, {**fp8_kw, "act_quant": True}, 1),
        }.items():
            flops, nbytes = moe_flops_bytes(T, H, inter, E, TOPK, 2, wb, BLOCK, ep_size=ep)
            a8 = "act_quant" in kw
            runs = [p for p in paths[1 if wb and not a8 else 2] if not (a8 and p)]  # w8a8: grouped
            if runs and a8 not in refs:
                refs[a8] = fused_moe_ref(x, q13, q2, tw, ids, expert_map=emap, act_quant=True,
                                         **fp8_kw).float()
            for small in runs:
                fn = functools.partial(fused_moe, x, a, b_, tw, ids, expert_map=emap,
                                       small_t=small, **kw)
                base = {"layout": layout, "T": T, "kernel": kernel,
                        "path": "small" if small else "grouped", "bytes": nbytes}
                modes = [True] if T <= GRAPH_MAX_T else [False]
                if T == 1:
                    modes = [False, True]
                for graph in modes:
                    r = b.measure(dict(base), fn, refs[a8], flops, nbytes, graph,
                                  refs[False] if a8 else None)
                    if kernel == "bf16" and small == paths[2][0]:
                        call_ms = r.get("ms")
                if small and T <= GRAPH_MAX_T:  # the down kernel's dependent launch, A/B
                    flag = "off" if small_t.PDL else "on"
                    try:  # an opt-in that the card or this Triton refuses must not end the run
                        b.measure({**base, "kernel": f"{kernel}, PDL {flag}"},
                                  flipped(small_t, "PDL", fn), refs[a8], flops, nbytes, True)
                    except Exception as e:  # noqa: BLE001 (reported in the row)
                        b.rows.append({**base, "kernel": f"{kernel}, PDL {flag}",
                                       "max_err": float("nan"), "refused": repr(e)[:200]})
                        print(json.dumps(b.rows[-1]), flush=True)
        if T > GRAPH_MAX_T:  # w8a16 prefill with the other block-scale placement (grouped.py)
            flops, nbytes = moe_flops_bytes(T, H, inter, E, TOPK, 2, 1, BLOCK, ep_size=ep)
            fn = flipped(grouped, "SCALE_DOTS", functools.partial(
                fused_moe, x, q13, q2, tw, ids, expert_map=emap, small_t=False, **fp8_kw))
            b.measure({"layout": layout, "T": T, "kernel": OTHER_PLACEMENT, "path": "grouped",
                       "bytes": nbytes}, fn, ref, flops, nbytes, False)
        if anchor and T in ANCHOR_T:
            flops, nbytes = moe_flops_bytes(T, H, inter, E, TOPK, 2)
            b.measure({"layout": layout, "T": T, "kernel": "torch._grouped_mm", "bytes": nbytes},
                      functools.partial(grouped_mm_moe, x, w13, w2, tw, ids), ref, flops, nbytes,
                      False)
        if T > GRAPH_MAX_T and call_ms:
            time_align(b, layout, T, ids, num_e, inter, emap, call_ms)


def pdl_pairs(rows: list[dict]):
    """(kernel, "on" | "off", flipped-PDL row, its committed graphed small-T row or None) for
    each row that flipped small_t.PDL (also read by bench/verdicts.py)."""
    base = {(r["layout"], r["T"], r["kernel"]): r for r in rows
            if r.get("path") == "small" and r.get("mode") == "graph" and "ms" in r}
    for r in rows:
        kernel, _, flag = r["kernel"].partition(", PDL ")
        if flag:
            yield kernel, flag, r, base.get((r["layout"], r["T"], kernel))


def pdl_ratios(rows: list[dict]) -> list[str]:
    """One line per flipped-PDL row: the committed setting's graphed ms over the flipped one's."""
    return [f"{kernel} small-T with PDL {flag} / as committed (ms ratio, >1: faster), "
            f"{r['layout']} T={r['T']}: {b['ms'] / r['ms']:.3f}"
            for kernel, flag, r, b in pdl_pairs(rows) if "ms" in r and b]


def flipped(module, flag: str, fn):
    """fn run with the bool module.flag flipped (grouped.SCALE_DOTS: w8a16 block scales on the
    tiles instead of the dots, or the reverse; small_t.PDL: the down kernel's dependent launch)."""
    def run():
        with flag_set(module, flag, not getattr(module, flag)):
            return fn()
    return run


def time_align(b: Bench, layout, T, ids, num_e, inter, emap, call_ms) -> None:
    """The align alone, one program and parallel (what the grouped path runs at this T), and
    its share of the bf16 call. Graph: GPU time, the share of the call (whose own launches
    overlap its GPU work); eager adds the host's launches (three for the parallel align)."""
    block_m = pick_config(T, TOPK, num_e, ids.device, inter, ACT).block_m
    used = align.default_chunk(ids.numel())
    for name, chunk in (("one program", 0), ("parallel", align.PARALLEL_CHUNK)):
        fn = functools.partial(align.align_experts, ids, num_e, block_m, emap, chunk=chunk)
        for mode, bench in (("graph", b.graph), ("eager", b.eager)):
            ms = bench(fn, return_mode="median")
            row = {"layout": layout, "T": T, "mode": mode, "align_ms": ms, "share": ms / call_ms,
                   "kernel": f"align ({name}{', used' if chunk == used else ''})"}
            b.rows.append(row)
            print(json.dumps(row), flush=True)
    b.save()


def main(argv=None) -> int:
    args = parse_args(argv)
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    b = Bench(args.out)
    for tp in args.tp:
        experts = make_experts(I_FULL // tp, seed=tp)
        tokens = list(args.tokens) + (list(args.long_tokens) if tp == 8 else [])
        run_layout(b, f"TP {tp} (I={I_FULL // tp})", experts, tokens, not args.no_anchor)
        if tp == 8 and args.sweep_fp8:
            b.sweep = sweep_fp8(b, experts, f"TP 8 (I={I_FULL // 8})", E, TOPK, H)
            b.save()
        if tp == 1 and args.ep_tokens:
            local = {k: tuple(t[: E // 8] for t in v) for k, v in experts.items()}
            emap = ep_expert_map(E, 0, 8, device=DEVICE)
            run_layout(b, "EP 8 (64 local, I=1024)", local, args.ep_tokens, False, emap)
        del experts
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    print(markdown(b.meta, b.rows, b.sweep))
    return 0 if all(r.get("ok", True) for r in b.rows) else 1


if __name__ == "__main__":
    sys.exit(main())

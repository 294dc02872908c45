"""Time fused_moe against SGLang's Triton fused_moe on Rio shapes (E=512, top-10, H=4096, bf16).

Run on a GPU: python -m rio_kernels.fused_moe.bench_fused_moe [--tokens 1 64] [--tp 1 8] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import torch

from .kernel import fused_moe, moe_flops_bytes, pick_config
from .ref import fused_moe_ref, route_topk

E, TOPK, H, I_FULL = 512, 10, 4096, 1024
TOKENS = (1, 8, 32, 64, 256, 4096)
TP_SIZES = (1, 2, 4, 8)
BF16_TOL = {"atol": 3e-2, "rtol": 3e-2}
NO_GPU = (
    "bench_fused_moe needs a CUDA GPU: it times Triton kernels against SGLang's on the device. "
    "No GPU is visible here; on CPU run the tests instead: "
    "TRITON_INTERPRET=1 python -m pytest kernels/fused_moe"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--tp", type=int, nargs="+", default=list(TP_SIZES))
    parser.add_argument("--json", default="bench_fused_moe.json", help="where to write results")
    parser.add_argument("--graph", action="store_true", help="time under CUDA graphs")
    parser.add_argument("--skip-sglang", action="store_true", help="time only our kernel")
    return parser.parse_args(argv)


def copy_ceiling_gbs(do_bench, nbytes: int = 1 << 30) -> float:
    """Device memory bandwidth ceiling: a 1 GiB device-to-device copy (read + write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src))
    return 2 * nbytes / ms / 1e6


def sglang_triton_moe():
    """SGLang's Triton `fused_experts` behind our argument order (imported only here)."""
    from sglang.srt.layers.moe.fused_moe_triton import fused_experts
    from sglang.srt.layers.moe.moe_runner import MoeRunnerConfig
    from sglang.srt.layers.moe.topk import StandardTopKOutput
    from sglang.srt.runtime_context import get_context

    # fused_experts reads the published server config; a dummy one stays up for the process.
    get_context().override_server_args().install()
    runner = MoeRunnerConfig(inplace=True)

    def run(x, w13, w2, topk_weights, topk_ids):
        # In place on a copy: the out-of-place path wants a tensor-parallel process group.
        out = x.clone()
        fused_experts(out, w13, w2, StandardTopKOutput(topk_weights, topk_ids, None), runner)
        return out

    return run


def make_weights(inter: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w13: [E, 2I, H] bf16, w2: [E, H, I] bf16, scaled so the output is O(1)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    w13 = torch.randn(E, 2 * inter, H, device="cuda", dtype=torch.bfloat16, generator=g)
    w2 = torch.randn(E, H, inter, device="cuda", dtype=torch.bfloat16, generator=g)
    return w13.mul_(H**-0.5), w2.mul_(inter**-0.5)


def make_routing(T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [T, H] bf16, topk_weights: [T, topk] fp32, topk_ids: [T, topk] int32."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(T, H, device="cuda", dtype=torch.bfloat16, generator=g)
    logits = torch.randn(T, E, device="cuda", generator=g)
    return (x, *route_topk(logits, TOPK))


def max_error(out: torch.Tensor, ref: torch.Tensor) -> tuple[bool, float]:
    ok = torch.allclose(out.float(), ref.float(), **BF16_TOL)
    return ok, (out.float() - ref.float()).abs().max().item()


def measure(name, fn, args, ref, do_bench, flops, nbytes, ceiling) -> dict:
    """Check fn against ref on these inputs; time it only if it is right."""
    ok, err = max_error(fn(*args), ref)
    row = {f"{name}_max_err": err, f"{name}_ok": ok}
    if ok:
        ms = do_bench(lambda: fn(*args))
        row.update({f"{name}_ms": ms, f"{name}_tflops": flops / ms / 1e9,
                    f"{name}_gbs": nbytes / ms / 1e6, f"{name}_frac": nbytes / ms / 1e6 / ceiling})
    return row


def cell(row: dict, name: str, key: str, fmt: str) -> str:
    if not row.get(f"{name}_ok", True):
        return f"WRONG ({row[f'{name}_max_err']:.2g})"
    value = row.get(f"{name}_{key}")
    return "-" if value is None else format(value, fmt)


def markdown(rows: list[dict], ceiling: float) -> str:
    lines = [
        f"copy ceiling {ceiling:.0f} GB/s; E={E} topk={TOPK} H={H} bf16",
        "",
        (
            "| tp | I | T | ours ms | sglang ms | speedup | ours TFLOP/s | ours GB/s"
            " | ours / ceiling | sglang GB/s | sglang / ceiling |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = "-"
        if "ours_ms" in r and "sglang_ms" in r:
            speedup = f"{r['sglang_ms'] / r['ours_ms']:.2f}x"
        lines.append(
            f"| {r['tp']} | {r['I']} | {r['T']} | {cell(r, 'ours', 'ms', '.4f')} "
            f"| {cell(r, 'sglang', 'ms', '.4f')} | {speedup} | {cell(r, 'ours', 'tflops', '.1f')} "
            f"| {cell(r, 'ours', 'gbs', '.0f')} | {cell(r, 'ours', 'frac', '.2f')} "
            f"| {cell(r, 'sglang', 'gbs', '.0f')} | {cell(r, 'sglang', 'frac', '.2f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    import triton.testing

    def do_bench(fn):
        if args.graph:
            return triton.testing.do_bench_cudagraph(fn, return_mode="median")
        return triton.testing.do_bench(fn, return_mode="median")

    ceiling = copy_ceiling_gbs(do_bench)
    kernels = {"ours": fused_moe}
    if not args.skip_sglang:
        kernels["sglang"] = sglang_triton_moe()
    rows = []
    for tp in args.tp:
        inter = I_FULL // tp
        w13, w2 = make_weights(inter, seed=tp)
        for T in args.tokens:
            x, topk_weights, topk_ids = make_routing(T, seed=T)
            inputs = (x, w13, w2, topk_weights, topk_ids)
            ref = fused_moe_ref(*inputs)
            flops, nbytes = moe_flops_bytes(T, H, inter, E, TOPK, dtype_bytes=2)
            row = {"tp": tp, "I": inter, "T": T, "flops": flops, "bytes": nbytes,
                   "config": asdict(pick_config(T, TOPK, E, x.device))}
            for name, fn in kernels.items():
                row.update(measure(name, fn, inputs, ref, do_bench, flops, nbytes, ceiling))
            rows.append(row)
        del w13, w2
        torch.cuda.empty_cache()
    print(markdown(rows, ceiling))
    result = {"device": torch.cuda.get_device_name(), "dtype": "bfloat16", "E": E, "topk": TOPK,
              "H": H, "copy_ceiling_gbs": ceiling, "graph": args.graph, "rows": rows}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.json}")
    wrong = [r for r in rows if not all(r.get(f"{n}_ok", True) for n in kernels)]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())

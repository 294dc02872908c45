"""Times the soft-embedding kernels (dense p @ E, top-k gather-sum) on Qwen3.5-397B shapes.

Run `python kernels/soft_embed/bench_soft_embed.py` on a CUDA machine; elsewhere it says so.
The baselines are what SGLang would run without us: cuBLAS `p @ E` and a torch gather-einsum.
"""

from __future__ import annotations

import sys

import torch

V, H = 248320, 4096  # Qwen3.5-397B vocabulary and hidden size
BATCHES = (1, 8, 64)
TOPKS = (64, 1024)
TOL = {"atol": 2e-2, "rtol": 2e-2}  # bf16 weights


def main() -> int:
    if not torch.cuda.is_available():
        print("bench_soft_embed: needs a GPU (CUDA); nothing was timed on this machine")
        return 0
    from triton.testing import do_bench

    from rio_kernels.benchmark import agrees, copy_ceiling_gbs
    from rio_kernels.soft_embed import kernel
    from rio_kernels.soft_embed.ref import soft_embed_ref, soft_embed_topk_ref

    ceiling = copy_ceiling_gbs()
    weight = torch.randn(V, H, device="cuda").to(torch.bfloat16)  # [V, H]
    print(f"device {torch.cuda.get_device_name()}: copy ceiling {ceiling:.0f} GB/s")
    print(f"{'op':>12} {'B':>4} {'kernel us':>10} {'GB/s':>7} {'% ceil':>7} {'base us':>9}")
    for B in BATCHES:
        probs = torch.softmax(torch.randn(B, V, device="cuda") * 3, dim=-1)  # [B, V] fp32
        got = kernel.soft_embed(probs, weight)
        if not agrees(f"dense B={B}", got, soft_embed_ref(probs, weight), **TOL):
            return 1
        p16 = probs.to(torch.bfloat16)
        rows = [("dense", lambda p=probs: kernel.soft_embed(p, weight),
                 lambda p=p16: p @ weight, kernel.soft_embed_bytes(probs, weight))]
        for k in TOPKS:
            vals, ids = torch.topk(probs, k, dim=-1)  # [B, k]
            got = kernel.soft_embed_topk(vals, ids, weight)
            if not agrees(f"top-{k} B={B}", got, soft_embed_topk_ref(vals, ids, weight), **TOL):
                return 1
            rows.append((f"top-{k}", lambda v=vals, i=ids: kernel.soft_embed_topk(v, i, weight),
                         lambda v=vals, i=ids: torch.einsum("bk,bkh->bh", v.to(weight.dtype),
                                                            weight[i]),
                         kernel.soft_embed_topk_bytes(vals, ids, weight)))
        for name, run, base, nbytes in rows:
            ms, ms_base = do_bench(run), do_bench(base)
            gbps = nbytes / ms / 1e6
            print(f"{name:>12} {B:>4} {ms * 1e3:>10.1f} {gbps:>7.0f} {100 * gbps / ceiling:>6.1f}% "
                  f"{ms_base * 1e3:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

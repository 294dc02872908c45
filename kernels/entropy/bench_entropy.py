"""Times the fused softmax entropy against the torch fp32 reference on the Qwen3.5 vocabulary.

Run `python kernels/entropy/bench_entropy.py` on a CUDA machine; elsewhere it says so and exits.
"""

from __future__ import annotations

import sys

import torch

V = 248320  # Qwen3.5 vocabulary
BATCHES = (1, 8, 64, 256)


def main() -> int:
    if not torch.cuda.is_available():
        print("bench_entropy: needs a GPU (CUDA); nothing was timed on this machine")
        return 0
    from triton.testing import do_bench

    from rio_kernels.benchmark import agrees, copy_ceiling_gbs
    from rio_kernels.entropy.kernel import bytes_moved, softmax_entropy
    from rio_kernels.entropy.ref import softmax_entropy_ref

    ceiling = copy_ceiling_gbs()
    print(f"device {torch.cuda.get_device_name()}: copy ceiling {ceiling:.0f} GB/s")
    print("SGLang has no entropy op of its own: the baseline is the torch fp32 reference")
    print(f"{'B':>5} {'kernel us':>10} {'GB/s':>7} {'% ceil':>7} {'torch us':>9} {'speedup':>8}")
    for B in BATCHES:
        z = (torch.randn(B, V, device="cuda") * 3).to(torch.bfloat16)  # [B, V]
        if not agrees(f"B={B}", softmax_entropy(z), softmax_entropy_ref(z), atol=3e-4, rtol=0):
            return 1
        ms = do_bench(lambda z=z: softmax_entropy(z))
        ms_ref = do_bench(lambda z=z: softmax_entropy_ref(z))
        gbps = bytes_moved(z) / ms / 1e6
        print(f"{B:>5} {ms * 1e3:>10.1f} {gbps:>7.0f} {100 * gbps / ceiling:>6.1f}% "
              f"{ms_ref * 1e3:>9.1f} {ms_ref / ms:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

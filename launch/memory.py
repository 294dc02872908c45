"""Per-GPU memory of a target: weights (bf16, or FP8 with their scales under `--quantization
fp8`), KV cache of the full-attention layers, GDN state, and the embedding rows the last
pipeline stage copies for latent reasoning under PP (V/tp per rank).

`rio-sglang memory --target h200x8 --context 1048576 [--concurrency N] [--mtp]` (or
`python -m launch.memory` from the repository root). Numbers come from a config.json dict
(default launch/rio_config.json) and the target's flags (--tp-size, --pp-size, --context-length,
--kv-cache-dtype, --mamba-ssm-dtype). Not counted: activations, CUDA graphs, NCCL buffers, allocator slack (what SGLang keeps outside
--mem-fraction-static), and SGLang's extra Mamba slots for radix-cache snapshots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from launch.params import BF16, FP32, Weight, full_attention_layers, weights
from rio_sglang import env
from rio_sglang.targets import Target, read_target

RIO_CONFIG = Path(__file__).resolve().parent / "rio_config.json"
GIB = 1 << 30
# Total memory nvidia-smi reports (MiB): H200 141 GB HBM3e, H100 SXM 80 GB HBM3.
GPU_MIB = {"h200": 143_771, "h100": 81_559}


@dataclass(frozen=True)
class Stage:
    """What every GPU of one pipeline stage holds (its TP ranks hold the same amounts)."""

    index: int
    layers: range
    attn_layers: int
    gdn_layers: int
    weights: int  # bytes
    kv_per_token: int  # bytes, K and V of this stage's full-attention layers
    state_per_seq: int  # bytes, conv + SSM state of this stage's GDN layers
    kv: int
    state: int
    latent_embed: int = 0  # bytes, ceil(V / tp) x H rows for latent steps (last stage, PP > 1)
    scales: int = 0  # bytes, fp32 scales of FP8 weights (`weights` counts their e4m3 bytes)

    @property
    def total(self) -> int:
        return self.weights + self.scales + self.kv + self.state + self.latent_embed


@dataclass(frozen=True)
class Estimate:
    target: str
    tp: int
    pp: int
    context: int
    concurrency: int
    gpu: str | None
    stages: tuple[Stage, ...]
    resume_bytes: int = 0  # host memory per rank for retracted latent requests' soft inputs
    step_bytes: int = 0  # host bytes one latent step's soft input takes on a rank (H x 2)

    @property
    def worst(self) -> Stage:
        return max(self.stages, key=lambda s: s.total)

    @property
    def gpu_bytes(self) -> int | None:
        return GPU_MIB[self.gpu] << 20 if self.gpu else None


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """SGLang's get_pp_indices: an even split, the last `num_layers % pp` stages one more."""
    base, extra = divmod(num_layers, pp)
    sizes = [base + (1 if s >= pp - extra else 0) for s in range(pp)]
    starts = [sum(sizes[:s]) for s in range(pp)]
    return [range(a, a + n) for a, n in zip(starts, sizes)]


def kv_bytes_per_token(text: dict, tp: int, attn_layers: int, kv_bytes: int = BF16) -> int:
    """K and V, one token: KV heads are split over TP, one whole head per rank below TP."""
    heads = max(1, text["num_key_value_heads"] // tp)
    return attn_layers * 2 * heads * text["head_dim"] * kv_bytes


def gdn_state_bytes_per_seq(text: dict, tp: int, gdn_layers: int, conv_bytes: int = BF16,
                            ssm_bytes: int = FP32) -> int:
    """One sequence: conv state [conv_dim / TP, K - 1] and SSM state [Hv / TP, Dk, Dv] per layer
    (SGLang's Mamba2StateShape; conv in the model dtype, SSM fp32 unless --mamba-ssm-dtype)."""
    conv_dim = 2 * text["linear_num_key_heads"] * text["linear_key_head_dim"] + \
        text["linear_num_value_heads"] * text["linear_value_head_dim"]
    conv = conv_dim // tp * (text["linear_conv_kernel_dim"] - 1) * conv_bytes
    ssm = (text["linear_num_value_heads"] // tp * text["linear_key_head_dim"]
           * text["linear_value_head_dim"] * ssm_bytes)
    return gdn_layers * (conv + ssm)


# FP8 (`--quantization fp8`: bf16 checkpoint, quantized as it loads). The routed experts: e4m3
# and one fp32 scale per block on each rank's I-shard (rio_sglang/layers/experts.py::expert_quant:
# 128 x 128 wherever it tiles the shard). The table's other FP8 linears (rows whose key may carry
# a scale): SGLang's Fp8LinearMethod (online: e4m3 and one fp32 scale per output row on Hopper),
# except the layers SGLANG_FP8_IGNORED_LAYERS names.
def fp8_rank_bytes(w: Weight, tp: int, text: dict, ignored: tuple[str, ...]) -> tuple[int, int]:
    """(e4m3 or kept bytes, fp32 scale bytes) of one tensor on one of `tp` ranks."""
    module = "." + w.name.rsplit(".", 1)[0] + "."
    if (not w.fp8 and w.split != "experts") or w.stage != "layer" or any(
            f".{i}." in module for i in ignored):
        return w.rank_bytes(tp), 0  # norms, conv, embeddings, vision, the MTP head: as loaded
    n = w.rank_numel(tp)
    if w.split == "experts":
        h, i = text["hidden_size"], text["moe_intermediate_size"]
        i_tp = i // tp
        block = math.gcd(128, i_tp, h)
        if i_tp % block or h % block:
            raise ValueError(f"{w.name}: I / TP {i_tp} is not a multiple of {block}-wide blocks")
        return n, n // (block * block) * FP32  # [E, 2I/tp, H] or [E, H, I/tp] in blocks
    return n, w.rank_rows(tp) * FP32


def _dtype_bytes(flag: str | None, default: int) -> int:
    if flag is None or flag == "auto":
        return default
    return {"float32": 4, "bfloat16": 2, "float16": 2}.get(flag, 1 if "fp8" in flag else default)


def estimate(cfg: dict, target: Target, context: int | None = None, concurrency: int = 1,
             mtp: bool = False, resume_bytes: int = 0) -> Estimate:
    """Per-GPU bytes of each pipeline stage of `target` at `context` tokens x `concurrency`;
    `resume_bytes`, the host memory bound of each rank's soft inputs (`env.resume_memory_bytes`),
    is carried to the report."""
    text = cfg["text_config"]
    tp, pp = int(target.flag("--tp-size") or 1), int(target.flag("--pp-size") or 1)
    context = context or int(target.flag("--context-length") or text["max_position_embeddings"])
    kv_b = _dtype_bytes(target.flag("--kv-cache-dtype"), BF16)
    ssm_b = _dtype_bytes(target.flag("--mamba-ssm-dtype"), FP32)
    table = weights(cfg, mtp=mtp)
    fp8 = target.flag("--quantization") == "fp8"
    if fp8 and mtp:
        raise ValueError("rio-sglang's MTP head serves bf16 only: no --mtp with --quantization fp8")
    ignored = tuple(x.strip() for x in target.env.get("SGLANG_FP8_IGNORED_LAYERS", "").split(",")
                    if x.strip())
    attn = set(full_attention_layers(text))
    stages = []
    for s, layers in enumerate(stage_layers(text["num_hidden_layers"], pp)):
        mine = [w for w in table
                if (w.stage == "first" and s == 0) or (w.stage == "last" and s == pp - 1)
                or (w.stage == "layer" and w.layer in layers)]
        n_attn = sum(1 for i in layers if i in attn) + (1 if mtp and s == pp - 1 else 0)
        n_gdn = sum(1 for i in layers if i not in attn)
        kv = kv_bytes_per_token(text, tp, n_attn, kv_b)
        state = gdn_state_bytes_per_seq(text, tp, n_gdn, ssm_bytes=ssm_b)
        # rio_sglang.models.qwen3_5_moe: latent inputs are mixed on the last stage, each TP rank
        # over its vocab shard. The first stage mixes the shard it embeds with (no copy); a last
        # stage that is not the first keeps a copy of its rank's ceil(V / tp) rows.
        copy = s == pp - 1 and pp > 1
        latent = -(-text["vocab_size"] // tp) * text["hidden_size"] * BF16 if copy else 0
        held = ([fp8_rank_bytes(w, tp, text, ignored) for w in mine] if fp8
                else [(w.rank_bytes(tp), 0) for w in mine])
        stages.append(Stage(s, layers, n_attn, n_gdn, sum(b for b, _ in held), kv, state,
                            kv * context * concurrency, state * concurrency, latent,
                            sum(c for _, c in held)))
    return Estimate(target.name, tp, pp, context, concurrency, target.gpu, tuple(stages),
                    resume_bytes, text["hidden_size"] * BF16)


def render(est: Estimate) -> str:
    s = est.worst
    cap = est.gpu_bytes
    gpus = f"{est.tp * est.pp} x {est.gpu} ({cap / GIB:.1f} GiB each)" if cap else "no GPU"
    last = s.layers[-1] if len(s.layers) else "-"
    rows = [("weights" + (" (e4m3 where FP8, the rest as loaded)" if s.scales else ""),
             s.weights), *([("FP8 scales (fp32)", s.scales)] if s.scales else []),
            (f"KV cache: {s.attn_layers} attention layers x {s.kv_per_token:,} B/token", s.kv),
            (f"GDN state: {s.gdn_layers} layers x {s.state_per_seq:,} B/sequence", s.state),
            ("latent-reasoning embedding rows (V/tp x H, last of PP stages)", s.latent_embed),
            ("total", s.total)]
    out = [(f"target {est.target}: {gpus}, TP {est.tp} x PP {est.pp}, "
            f"{est.context:,} tokens x {est.concurrency} sequence(s)"),
           f"per GPU, fullest stage {s.index} (layers {s.layers[0]}-{last}):"]
    out += [f"  {name:<58} {value:>17,} B {value / GIB:>8.2f} GiB" for name, value in rows]
    if cap:
        verdict = "fits" if s.total < cap else "DOES NOT FIT"
        out.append(f"  {s.total / cap:.1%} of the GPU's {cap / GIB:.1f} GiB: {verdict} before "
                   "activations, CUDA graphs and communication buffers")
    steps = est.resume_bytes // est.step_bytes if est.step_bytes else 0
    out.append(f"host memory per rank: up to {est.resume_bytes / 2**20:,.0f} MiB for latent "
               f"requests' soft inputs (retraction resumes exactly; {est.step_bytes:,} B per "
               f"latent step: {steps:,} steps of live requests; --resume-memory-mib)")
    return "\n".join(out)


class _Placeholders(dict):
    """Lets a target with ${NODE_RANK}-style values be read without those variables set."""

    def __contains__(self, key) -> bool:
        return True

    def __missing__(self, key) -> str:
        return f"<{key}>"


def main(argv=None, prog: str = "python -m launch.memory") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    ap.add_argument("--target", required=True)
    ap.add_argument("--context", type=int, help="tokens per sequence (default: the target's)")
    ap.add_argument("--concurrency", type=int, default=1, help="sequences held at once")
    ap.add_argument("--mtp", action="store_true", help="with the MTP head (speculative NEXTN)")
    ap.add_argument("--resume-memory-mib", type=float, metavar="MIB",
                    help="the host bound of soft inputs per rank (default: the target's "
                         "RIO_RESUME_MEMORY_MIB, the environment's, or 1024)")
    ap.add_argument("--config", type=Path,
                    help="a config.json (default launch/rio_config.json; cpu-tiny: the tiny one)")
    args = ap.parse_args(argv)
    target = read_target(args.target, _Placeholders())
    path = args.config or RIO_CONFIG
    if target.tiny and args.config is None:
        from rio_sglang.tiny import cached_tiny_checkpoint

        path = cached_tiny_checkpoint() / "config.json"
    cfg = json.loads(path.read_text())
    given = args.resume_memory_mib
    try:
        resume = env.resume_memory_bytes_of(
            str(given) if given is not None else
            target.env.get(env.RESUME_MEMORY) or os.environ.get(env.RESUME_MEMORY))
    except ValueError as e:
        ap.error(str(e))
    sys.stdout.write(render(estimate(cfg, target, args.context, args.concurrency, args.mtp,
                                     resume)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak RSS of `python -m rio_sglang.provenance blend` on generated checkpoints with Rio's real
tensor widths (rio-slice-4 shapes): parents A, B of random bf16 and the child 0.6*A + 0.4*B.

`python -m bench.provenance_memory --gb 2 [--dir D] [--json OUT]`; tests/test_provenance_memory.py
runs it small. The files are freshly written, so reads come mostly from the page cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from launch.params import weights
from rio_sglang.tiny.presets import PRESETS, build_config
from rio_sglang.tiny.tokenizer import SPECIAL_TOKENS

SHARD_BYTES = 512 << 20
CHUNK_ELEMS = 1 << 22  # generated per step: the generator's memory stays bounded too


def plan(budget: int, preset: str = "rio-slice-4") -> tuple[dict, list[tuple[str, tuple, str]]]:
    """(config dict, [(name, shape, dtype)]): whole tensors in order while they fit `budget`
    bytes, then the first one that did not, cut to the rows that fill the rest."""
    cfg = build_config(PRESETS[preset], {t: i for i, t in enumerate(SPECIAL_TOKENS)}).to_dict()
    chosen, left, cut = [], budget, None
    for w in weights(cfg):
        size = w.rows * w.cols * w.dtype_bytes
        dtype = "F32" if w.dtype_bytes == 4 else "BF16"
        if size <= left:
            chosen.append((w.name, w.shape, dtype))
            left -= size
        elif cut is None:
            cut = (w.name, w.cols, w.dtype_bytes, dtype)
    rows = left // (cut[1] * cut[2])
    if rows:
        chosen.append((cut[0], (rows, cut[1]), cut[3]))
    return cfg, chosen


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    bits = x.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _widen(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_family(root: Path, budget: int, seed: int = 0) -> list[Path]:
    """Write parent_a, parent_b and child (0.6*A + 0.4*B) of ~`budget` bytes each, streaming."""
    cfg, tensors = plan(budget)
    dirs = [root / n for n in ("parent_a", "parent_b", "child")]
    shards, size = [[]], 0
    for t in tensors:
        nbytes = int(np.prod(t[1])) * (4 if t[2] == "F32" else 2)
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nbytes
    rng = np.random.default_rng(seed)
    weight_map, total = {}, 0
    for d in dirs:
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(cfg) + "\n")
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for name, shape, dtype in shard:
            nbytes = int(np.prod(shape)) * (4 if dtype == "F32" else 2)
            header[name] = {"dtype": dtype, "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = fname
        total += offset
        head = json.dumps(header).encode()
        files = [(d / fname).open("wb") for d in dirs]
        for f in files:
            f.write(len(head).to_bytes(8, "little") + head)
        for name, shape, dtype in shard:
            n = int(np.prod(shape))
            for s in range(0, n, CHUNK_ELEMS):
                k = min(CHUNK_ELEMS, n - s)
                a, b = (0.02 * rng.standard_normal(k, dtype=np.float32) for _ in range(2))
                if dtype == "BF16":
                    a, b = _bf16(a), _bf16(b)
                    c = _bf16(0.6 * _widen(a) + 0.4 * _widen(b))
                else:
                    c = (0.6 * a + 0.4 * b).astype(np.float32)
                for f, x in zip(files, (a, b, c)):
                    f.write(x.tobytes())
        for f in files:
            f.close()
    index = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    for d in dirs:
        (d / "model.safetensors.index.json").write_text(index + "\n")
    return dirs


# A bare interpreter starts the measured command: on Linux a child's ru_maxrss starts from its
# parent's RSS at fork, and this module's parent holds transformers.
_WRAP = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def peak_rss(cmd: list[str]) -> tuple[int, float, str]:
    """(peak RSS in bytes, seconds, stdout) of a command run to completion."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {proc.stderr[-2000:]}")
    *out, kib = proc.stdout.splitlines()
    return int(kib) * 1024, time.monotonic() - start, "\n".join(out)


def run(gb: float, root: Path, block_elems: int = 1 << 20) -> dict:
    """Generate the three checkpoints under `root`, run `blend` on them, measure its peak RSS
    and that of a process that only imports what `blend` imports (the interpreter's floor)."""
    a, b, c = write_family(root, int(gb * 1e9))
    size = sum(f.stat().st_size for f in a.glob("*.safetensors"))
    imports = "import rio_sglang.provenance.__main__, rio_sglang.provenance.plot, tqdm, numpy"
    floor, _, _ = peak_rss([sys.executable, "-c", imports])
    peak, seconds, out = peak_rss([sys.executable, "-m", "rio_sglang.provenance", "blend", str(c),
                                   str(a), str(b), "--out", str(root / "report"), "--no-progress",
                                   "--no-plot",  # the reads and fits are measured, not matplotlib
                                   "--block-elems", str(block_elems)])
    return {"checkpoint_bytes": size, "peak_rss": peak, "import_rss": floor,
            "peak_over_checkpoint": peak / size, "growth_over_checkpoint": (peak - floor) / size,
            "seconds": seconds, "read_gbs": 3 * size / seconds / 1e9, "block_elems": block_elems,
            "verdict": out.splitlines()[0]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.provenance_memory", description=__doc__)
    ap.add_argument("--gb", type=float, default=2.0, help="size of each checkpoint")
    ap.add_argument("--dir", default=None, help="where to write them (default: a temp folder)")
    ap.add_argument("--block-elems", type=int, default=1 << 20)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="provenance-memory-"))
    try:
        r = run(args.gb, root / "ckpts", args.block_elems)
    finally:
        shutil.rmtree(root / "ckpts", ignore_errors=True)
    mb = 1 << 20
    print(f"checkpoint {r['checkpoint_bytes'] / 1e9:.2f} GB each (x3) | peak RSS "
          f"{r['peak_rss'] / mb:.0f} MiB = {100 * r['peak_over_checkpoint']:.1f}% of one "
          f"checkpoint | import floor {r['import_rss'] / mb:.0f} MiB | {r['seconds']:.1f} s, "
          f"{r['read_gbs']:.2f} GB/s read\n{r['verdict']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()

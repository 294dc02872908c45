"""Compare a child checkpoint with one or two parents, tensor by tensor, in bounded memory.

Called by `python -m rio_sglang.provenance blend`; `report.py` turns the result into JSON,
Markdown and a plot. Names, shapes and dtypes are matched first: what does not match is listed.
"""

from __future__ import annotations

import os
import re
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from rio_sglang.checkpoint import CheckpointInfo

from .fit import (
    BLEND_SUMS,
    DISTANCE_SUMS,
    BlendFit,
    DistanceFit,
    blend_fit,
    block_sums,
    distance_fit,
)
from .reader import TensorRef, open_checkpoint, read_rows, row_runs

ROLES = ("child", "parent_a", "parent_b")
# (pattern, component): first match wins; language-model layers also get a layer number.
COMPONENTS = (
    (r"^mtp\.", "mtp"),
    (r"(^|\.)visual\.", "vision"),
    (r"embed_tokens|lm_head", "embeddings"),
    (r"\.mlp\.shared_expert", "shared expert"),
    (r"\.mlp\.experts\.", "experts"),
    (r"\.mlp\.gate\.", "router"),
    (r"\.linear_attn\.", "GDN"),
    (r"\.self_attn\.", "attention"),
    (r"norm", "norms"),
)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def classify(name: str) -> tuple[int | None, str]:
    """Tensor name -> (language-model layer or None, component)."""
    component = next((c for p, c in COMPONENTS if re.search(p, name)), "other")
    m = _LAYER.search(name)
    layer = int(m.group(1)) if m and component not in ("mtp", "vision") else None
    return layer, component


@dataclass(frozen=True)
class TensorResult:
    name: str
    layer: int | None
    component: str
    shape: tuple[int, ...]
    dtypes: tuple[str, ...]  # per role
    fit: BlendFit | DistanceFit


@dataclass
class Comparison:
    """Everything `report.py` needs: per-tensor fits and what could not be compared."""

    infos: list[CheckpointInfo]
    results: list[TensorResult] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)  # {"name", "present_in": [roles]}
    mismatched: list[dict] = field(default_factory=list)  # {"name", "what", "fitted", role: ...}
    bytes_read: int = 0
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def roles(self) -> tuple[str, ...]:
        return ROLES[: len(self.infos)]


def _match(tables: list[dict[str, TensorRef]], cmp: Comparison) -> list[list[TensorRef]]:
    """Tensors present in every checkpoint with one shape; lists the rest in `cmp`."""
    roles, matched = cmp.roles, []
    for name in sorted(set().union(*tables)):
        refs = [t.get(name) for t in tables]
        if any(r is None for r in refs):
            cmp.missing.append({"name": name,
                                "present_in": [ro for ro, r in zip(roles, refs) if r is not None]})
            continue
        shapes = {r.shape for r in refs}
        dtypes = {r.dtype for r in refs}
        readable = all(r.readable for r in refs)
        if len(shapes) > 1 or len(dtypes) > 1 or not readable:
            what = ("shape differs" if len(shapes) > 1 else "dtype differs" if len(dtypes) > 1
                    else "unsupported dtype")
            fitted = len(shapes) == 1 and readable
            cmp.mismatched.append({"name": name, "what": what, "fitted": fitted,
                                   **{ro: f"{r.dtype}{list(r.shape)}" for ro, r in zip(roles, refs)}})
            if not fitted:
                continue
        matched.append(refs)
    return matched


def _plan(ref: TensorRef, sample_rows: int | None, seed: int, block_elems: int):
    """Row runs to read for one tensor: every row in blocks, or a seeded subset of rows."""
    rows = ref.numel // ref.row_len
    max_rows = max(1, block_elems // ref.row_len)
    if sample_rows and rows > sample_rows:
        rng = np.random.default_rng([seed, zlib.crc32(ref.name.encode())])
        return row_runs(np.sort(rng.choice(rows, sample_rows, replace=False)), max_rows)
    return [(s, min(s + max_rows, rows)) for s in range(0, rows, max_rows)]


def compare(child, parents: list, sample_rows: int | None = None, seed: int = 0,
            block_elems: int = 1 << 20, progress: bool = True) -> Comparison:
    """Fit `child` against one or two `parents` (checkpoint folders); raises CheckpointError if
    a shard of any of them is absent or corrupt, before reading a tensor."""
    from tqdm import tqdm

    if len(parents) not in (1, 2):
        raise ValueError("blend takes one or two parents")
    opened = [open_checkpoint(p) for p in (child, *parents)]
    cmp = Comparison([info for info, _ in opened], settings={
        "sample_rows": sample_rows, "seed": seed, "block_elems": block_elems})
    matched = _match([refs for _, refs in opened], cmp)
    plans = [_plan(refs[0], sample_rows, seed, block_elems) for refs in matched]
    total = sum((b - a) * r.row_len * r.itemsize for refs, plan in zip(matched, plans)
                for a, b in plan for r in refs)
    fds: dict = {}
    start = time.monotonic()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="blend", disable=not progress,
               smoothing=0.1)
    try:
        for refs, plan in zip(matched, plans):
            sums = np.zeros(len(BLEND_SUMS if len(refs) == 3 else DISTANCE_SUMS))
            for a, b in plan:
                blocks = []
                for r in refs:
                    if r.path not in fds:
                        fds[r.path] = os.open(r.path, os.O_RDONLY)
                    blocks.append(read_rows(r, fds[r.path], a, b))
                sums += block_sums(*blocks)
                n = (b - a) * sum(r.row_len * r.itemsize for r in refs)
                cmp.bytes_read += n
                bar.update(n)
            fit = blend_fit(sums) if len(refs) == 3 else distance_fit(sums)
            cmp.results.append(TensorResult(refs[0].name, *classify(refs[0].name), refs[0].shape,
                                            tuple(r.dtype for r in refs), fit))
    finally:
        bar.close()
        for fd in fds.values():
            os.close(fd)
    cmp.seconds = time.monotonic() - start
    return cmp

"""Stream a safetensors checkpoint tensor by tensor in bounded row blocks (used by `blend`).

Blocks are read with `pread` into fresh buffers, not through an mmap: pages touched in a
mapping count towards the process's RSS until it is unmapped, so a 2 GB tensor read through
one would leave ~2 GB resident. Here only the current block is held.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rio_sglang.checkpoint import INDEX, CheckpointError, CheckpointInfo, verify_checkpoint

# Element types a block can be decoded from (BF16 is widened by hand: numpy has no bfloat16).
_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie: `shape` as stored, `offset` from the start of `path`."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def row_len(self) -> int:
        """Elements per row: the tensor is read as [numel / last dim, last dim]."""
        return self.shape[-1] if self.shape and self.shape[-1] else 1

    @property
    def itemsize(self) -> int:
        return np.dtype(_NUMPY[self.dtype]).itemsize

    @property
    def readable(self) -> bool:
        return self.dtype in _NUMPY


def open_checkpoint(path) -> tuple[CheckpointInfo, dict[str, TensorRef]]:
    """Verify the checkpoint (CheckpointError if a shard is absent or corrupt) and locate every
    tensor; reads only config.json, the index and shard headers."""
    info = verify_checkpoint(path)
    root = Path(path)
    if (root / INDEX).exists():
        shards = sorted(set(json.loads((root / INDEX).read_text())["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    refs = {}
    for shard in shards:
        file = root / shard
        with file.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        for name, t in header.items():
            refs[name] = TensorRef(name, t["dtype"], tuple(t["shape"]), file,
                                   8 + n + t["data_offsets"][0])
    return info, refs


def read_rows(ref: TensorRef, fd: int, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of `ref` from an open file descriptor, as float64: [rows * row_len]."""
    count = (stop - start) * ref.row_len
    nbytes = count * ref.itemsize
    data = os.pread(fd, nbytes, ref.offset + start * ref.row_len * ref.itemsize)
    if len(data) != nbytes:
        raise CheckpointError(f"{ref.path.name}: {ref.name} ends early ({len(data)} of {nbytes} "
                              "bytes): the shard changed or was truncated while being read")
    raw = np.frombuffer(data, dtype=_NUMPY[ref.dtype])
    if ref.dtype == "BF16":  # bf16 bits are the high half of a float32 (little-endian)
        return np.left_shift(raw, 16, dtype=np.uint32).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)


def row_runs(rows: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Sorted row indices -> [start, stop) runs of consecutive rows, each at most max_rows long."""
    runs: list[tuple[int, int]] = []
    for r in rows.tolist():
        if runs and runs[-1][1] == r and r - runs[-1][0] < max_rows:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs

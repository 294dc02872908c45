"""Check a checkpoint folder before any weight is read, and fingerprint what is served.

Called by `rio-sglang serve` (serve.py) and by our model's `load_weights`. Reads only
config.json, the safetensors index and each shard's header: cheap even for 97 shards.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

INDEX = "model.safetensors.index.json"
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class CheckpointError(RuntimeError):
    """The checkpoint at a path is missing, incomplete or corrupt; the message names the culprit."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    architecture: str
    shards: int
    tensors: int
    total_bytes: int
    fingerprint: str  # sha256 over config.json and the index: tells revisions apart

    def describe(self) -> str:
        return (f"{self.architecture} at {self.path}: {self.tensors} tensors in {self.shards} "
                f"shard(s), {self.total_bytes} bytes, fingerprint {self.fingerprint[:16]}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def shard_header(path: Path) -> dict:
    """The safetensors header of one shard; raises CheckpointError if truncated or corrupt."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise CheckpointError(f"shard {path.name}: header length {n} exceeds file size")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"shard {path.name} listed in the index is missing") from None
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"shard {path.name}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + end != size:
        raise CheckpointError(f"shard {path.name}: {size} bytes on disk, header says {8 + n + end}"
                              " (truncated or padded file)")
    return header


def verify_checkpoint(path) -> CheckpointInfo:
    """Every shard named by the index is present, holds its tensors, and sizes add up."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"model path {root} does not exist or is not a directory")
    config = _read_json(root / "config.json")
    archs = config.get("architectures") or ["<none>"]
    index_path = root / INDEX
    if index_path.exists():
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path} has no weight_map")
        declared = _read_json(index_path).get("metadata", {}).get("total_size")
    else:
        single = root / "model.safetensors"
        if not single.exists():
            raise CheckpointError(f"{root} has neither {INDEX} nor model.safetensors")
        weight_map = {name: single.name for name in shard_header(single)}
        declared = None
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    missing_files = sorted(s for s in by_shard if not (root / s).exists())
    if missing_files:
        raise CheckpointError(f"{len(missing_files)} shard(s) listed in the index are missing: "
                              + ", ".join(missing_files))
    total = 0
    for shard, names in sorted(by_shard.items()):
        header = shard_header(root / shard)
        absent = sorted(set(names) - set(header))
        if absent:
            raise CheckpointError(f"shard {shard} lacks tensors the index puts there: {absent[:5]}")
        for name in names:
            start, end = header[name]["data_offsets"]
            total += end - start
    if declared is not None and int(declared) != total:
        raise CheckpointError(f"index total_size {declared} != {total} bytes of tensors in shards")
    digest = hashlib.sha256((root / "config.json").read_bytes())
    if index_path.exists():
        digest.update(index_path.read_bytes())
    return CheckpointInfo(root, archs[0], len(by_shard), len(weight_map), total, digest.hexdigest())

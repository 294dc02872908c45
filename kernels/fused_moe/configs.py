"""Tiles of the grouped (prefill) path: built-in guesses, and per-device tables written by
tune.py (configs/<device>.json, like SGLang's per-device JSON configs), read once per process.

A table maps "E=<E>,I=<I>,w=<weight dtype>" to rows [T_max, [block_m, block_n, block_k,
num_warps, num_stages]] sorted by T_max: a call with T tokens takes the first row with T <= T_max
(the last row also takes every larger T). No autotuning while serving.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import torch

from .. import interpreted

TABLES_DIR = os.path.join(os.path.dirname(__file__), "configs")


@dataclass(frozen=True)
class MoeConfig:
    """Tile sizes shared by both grouped GEMMs (M: pair rows, N: output columns, K: reduction)."""

    block_m: int = 16
    block_n: int = 32
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 1


# Interpreted path: one fixed config, no autotune.
INTERPRET_CONFIG = MoeConfig()
# GPU without a table: keyed on the average rows per expert, T * topk / E. Untuned guesses.
GPU_CONFIGS = (
    (4.0, MoeConfig(block_m=16, block_n=32, block_k=256, num_warps=4, num_stages=3)),
    (32.0, MoeConfig(block_m=32, block_n=64, block_k=128, num_warps=4, num_stages=3)),
    (float("inf"), MoeConfig(block_m=64, block_n=128, block_k=64, num_warps=8, num_stages=3)),
)


def table_key(E: int, inter_size: int, weight_dtype: torch.dtype) -> str:
    return f"E={E},I={inter_size},w={str(weight_dtype).removeprefix('torch.')}"


def table_path(device_name: str, tables_dir: str = TABLES_DIR) -> str:
    """configs/<device name with spaces and slashes as underscores>.json"""
    return os.path.join(tables_dir, device_name.replace(" ", "_").replace("/", "_") + ".json")


@functools.cache
def load_table(device_name: str, tables_dir: str = TABLES_DIR) -> dict:
    """{key: [(T_max, MoeConfig), ...]} for this device; {} when it has no table."""
    path = table_path(device_name, tables_dir)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        raw = json.load(f)["tables"]
    return {key: [(t_max, MoeConfig(*tiles)) for t_max, tiles in rows] for key, rows in raw.items()}


def from_table(table: dict, key: str, T: int) -> MoeConfig | None:
    rows = table.get(key)
    if not rows:
        return None
    return next((cfg for t_max, cfg in rows if T <= t_max), rows[-1][1])


def device_name(device: torch.device) -> str:
    """The name the tables are keyed by (bench/hopper_compile.py stands in a Hopper's)."""
    return torch.cuda.get_device_name(device)


def pick_config(T: int, topk: int, E: int, device: torch.device, inter_size: int | None = None,
                weight_dtype: torch.dtype | None = None) -> MoeConfig:
    """Tiles for T tokens routed top-k over E local experts of width inter_size on this device:
    the device's tuned table when it has a row for (E, I, weight dtype), else GPU_CONFIGS."""
    if interpreted():
        return INTERPRET_CONFIG
    if inter_size is not None and weight_dtype is not None:
        table = load_table(device_name(device))
        cfg = from_table(table, table_key(E, inter_size, weight_dtype), T)
        if cfg is not None:
            return cfg
    rows_per_expert = T * topk / E
    return next(cfg for limit, cfg in GPU_CONFIGS if rows_per_expert <= limit)

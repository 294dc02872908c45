"""Per-device tile tables (configs.py): written as tune.py writes them, read back by T range."""

import json

import torch

from rio_kernels.fused_moe import configs


def write_table(tmp_path, device, tables):
    path = configs.table_path(device, str(tmp_path))
    with open(path, "w") as f:
        json.dump({"device": device, "date": "2026-11-27", "tables": tables}, f)
    return path


def test_table_rows_by_T_range(tmp_path):
    key = configs.table_key(512, 128, torch.float8_e4m3fn)
    assert key == "E=512,I=128,w=float8_e4m3fn"
    write_table(tmp_path, "NVIDIA H100 80GB HBM3", {key: [
        [256.0, [32, 64, 128, 4, 3]],
        [2896.3, [64, 128, 64, 8, 3]],
        [16384, [128, 128, 64, 8, 4]],
    ]})
    table = configs.load_table("NVIDIA H100 80GB HBM3", str(tmp_path))
    # (T, expected block_m): a row takes T <= T_max; past the last finite row, the last row.
    for T, block_m in [(1, 32), (256, 32), (257, 64), (2896, 64), (2897, 128), (10**6, 128)]:
        assert configs.from_table(table, key, T).block_m == block_m, T
    assert configs.from_table(table, configs.table_key(512, 1024, torch.bfloat16), 64) is None


def test_no_table_for_device(tmp_path):
    assert configs.load_table("Some Other GPU", str(tmp_path)) == {}
    assert configs.table_path("A/B C", "d") == "d/A_B_C.json"


def test_interpreter_uses_one_fixed_config():
    cfg = configs.pick_config(4096, 10, 512, torch.device("cpu"), 128, torch.bfloat16)
    assert cfg == configs.INTERPRET_CONFIG

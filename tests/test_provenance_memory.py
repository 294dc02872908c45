"""`blend` reads in bounded memory: bench/provenance_memory.py run small (40 MB checkpoints,
small blocks); the benchmark itself runs it at 2 GB (docs/CLAIMS.md: numbers)."""

from bench.provenance_memory import run


def test_blend_memory_grows_by_a_block_not_a_checkpoint(tmp_path):
    r = run(0.04, tmp_path / "ckpts", block_elems=1 << 16)
    assert r["verdict"].startswith("BLEND: consistent with a single 0.600 / 0.400 blend for 100.0%")
    assert r["checkpoint_bytes"] > 0.99 * 40e6
    # The interpreter and numpy alone take more than 25% of 40 MB: bound what reading adds.
    assert r["peak_rss"] - r["import_rss"] < 0.25 * r["checkpoint_bytes"], r

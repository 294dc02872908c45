"""Soft embeddings (p @ E, top-k gather-sum, delimiter blend): `kernel.py` and torch `ref.py`."""

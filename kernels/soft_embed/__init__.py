"""Soft embeddings (p @ E, top-k gather-sum, delimiter blend): `kernel.py` and torch `ref.py`."""

from .. import lazy_exports
from .ref import delimiter_blend_ref, soft_embed_ref, soft_embed_topk_ref

__all__ = ["delimiter_blend", "delimiter_blend_ref", "soft_embed", "soft_embed_ref",
           "soft_embed_topk", "soft_embed_topk_ref"]
__getattr__ = lazy_exports(__name__, {name: "kernel" for name in
                                      ("soft_embed", "soft_embed_topk", "delimiter_blend")})

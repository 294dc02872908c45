"""Tensor-parallel shard helpers shared by our layers' weight loaders."""

from __future__ import annotations

import torch


def tp_rank_size() -> tuple[int, int]:
    from sglang.srt.distributed.parallel_state import (
        get_tensor_model_parallel_rank,
        get_tensor_model_parallel_world_size,
    )

    return get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size()


def moe_rank_size() -> tuple[tuple[int, int], tuple[int, int]]:
    """((MoE-EP rank, size), (MoE-TP rank, size)) from SGLang's MoE groups (--ep-size)."""
    from sglang.srt.distributed import parallel_state as ps

    return ((ps.get_moe_expert_parallel_rank(), ps.get_moe_expert_parallel_world_size()),
            (ps.get_moe_tensor_parallel_rank(), ps.get_moe_tensor_parallel_world_size()))


def shard_rows(t: torch.Tensor, dim: int, rank: int, size: int) -> torch.Tensor:
    """This rank's equal slice of `t` along `dim` (the full length must divide by `size`)."""
    n = t.shape[dim]
    if n % size:
        raise ValueError(f"cannot shard {tuple(t.shape)} dim {dim} over {size} ranks")
    return t.narrow(dim, rank * (n // size), n // size)


def check_shape(name: str, got: torch.Size, want: tuple) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{name}: checkpoint shape {tuple(got)}, expected {tuple(want)}")


def copy_into(param: torch.Tensor, loaded: torch.Tensor, name: str) -> None:
    check_shape(name, loaded.shape, param.shape)
    param.data.copy_(loaded)


def unpadded(config, name: str) -> int:
    """`config.<name>` before SGLang's CPU alignment padding (it pads intermediate sizes to 32 on
    `--device cpu` and keeps the checkpoint's value as `original_<name>`); our kernels and the
    strict loader want the checkpoint's size."""
    return getattr(config, f"original_{name}", None) or getattr(config, name)


def load_linear(layer, part: str, w: torch.Tensor, name: str, shard_id=None) -> None:
    """Load a checkpoint tensor into an SGLang linear's `part` ("weight", or the scale its FP8
    method registered: `weight_scale_inv` block, `weight_scale` channel) through that
    parameter's own TP-aware loader. A part the layer lacks is an unexpected tensor."""
    param = getattr(layer, part, None)
    if not isinstance(param, torch.nn.Parameter):
        raise KeyError(name)
    if shard_id is None:
        param.weight_loader(param, w)
    else:
        param.weight_loader(param, w, shard_id)


def scale_rows(layer, part: str, rows: list[int]) -> list[int]:
    """Row counts of a fused linear's parts in `part` units: weight and channel-scale rows as
    given, block-scale rows per block (SGLang's `weight_block_size`)."""
    if part != "weight_scale_inv":
        return rows
    bn = layer.quant_method.quant_config.weight_block_size[0]
    if any(r % bn for r in rows):
        raise ValueError(f"parts {rows} are not whole {bn}-row FP8 blocks")
    return [r // bn for r in rows]

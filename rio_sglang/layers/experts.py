"""Routed-expert weight storage and strict per-expert loading, bf16 or FP8 (e4m3 + scales).

`SparseMoe` (layers/moe.py) is an `ExpertStore`; the loader table (tensor_table.py) calls
`load_expert` / `load_fused` with full checkpoint tensors. Plain torch, no SGLang import: CPU
tests build a store directly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from rio_kernels.fused_moe import fp8
from rio_sglang import env

log = logging.getLogger(__name__)
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ExpertQuant:
    """How the routed experts are stored. block (bn, bk): one fp32 scale per bn x bk block
    (Qwen's FP8 releases, `weight_scale_inv`); None: one per output channel
    (compressed-tensors, `weight_scale` [N, 1]). serialized False: the checkpoint is bf16 and
    the experts are block-quantized as they load (`--quantization fp8`)."""

    block: tuple[int, int] | None
    serialized: bool = True

    @property
    def scale_name(self) -> str:
        return "weight_scale_inv" if self.block is not None else "weight_scale"

    def describe(self) -> str:
        kind = "channel" if self.block is None else f"block {self.block[0]}x{self.block[1]}"
        return f"fp8 {kind}" + ("" if self.serialized else " (quantized at load)")


def expert_quant(quant_config, i_tp: int, h: int) -> ExpertQuant | None:
    """SGLang's quant config (from the checkpoint's `quantization_config` or `--quantization`)
    -> how our experts are stored; None for bf16. i_tp: this rank's expert intermediate size."""
    if quant_config is None:
        return None
    name = quant_config.get_name()
    if name == "fp8" and getattr(quant_config, "is_checkpoint_fp8_serialized", False):
        block = getattr(quant_config, "weight_block_size", None)
        if block is None:
            raise NotImplementedError("rio-sglang reads block-scaled FP8 (weight_block_size) or "
                                      "compressed-tensors per-channel FP8, not per-tensor FP8")
        return ExpertQuant((int(block[0]), int(block[1])))
    if name == "fp8":
        # Quantized at load: Qwen's 128 x 128 blocks where the shard allows, smaller for tiny
        # models (a block must not straddle the gate / up halves of this rank's I).
        g = math.gcd(128, i_tp, h)
        return ExpertQuant((g, g), serialized=False)
    if name == "compressed_tensors":
        for target, scheme in quant_config.target_scheme_map.items():
            w = scheme.get("weights")
            got = (w.num_bits, _value(w.type), _value(w.strategy)) if w is not None else None
            if got != (8, "float", "channel"):
                raise NotImplementedError(f"compressed-tensors group {target!r}: weights {got}; "
                                          "rio-sglang reads per-channel FP8 (8, float, channel)")
        return ExpertQuant(None)
    raise NotImplementedError(f"rio-sglang's experts read bf16 or FP8, not {name!r}")


class ExpertStore(nn.Module):
    """This rank's routed experts: w13 [E_local, 2 I_tp, H] (gate rows, then up rows) and
    w2 [E_local, H, I_tp]; with FP8 also w13_scale / w2_scale as `fp8.scale_shape` says.
    Experts [e_start, e_start + e_local) live here; I is split over the MoE-TP ranks."""

    def __init__(self, num_experts: int, e_local: int, e_start: int, h: int, i: int,
                 moe_tp: tuple[int, int], quant: ExpertQuant | None, dtype: torch.dtype):
        super().__init__()
        self.num_experts, self.e_local, self.e_start = num_experts, e_local, e_start
        self.h, self.i = h, i
        self.moe_tp_rank, self.moe_tp_size = moe_tp
        self.i_tp = i_tp = i // self.moe_tp_size
        self.quant = quant
        self.act_quant = quant is not None and env.moe_w8a8()  # w8a8 prefill, opt-in
        wdtype = dtype if quant is None else fp8.FP8
        self.w13 = nn.Parameter(torch.empty(e_local, 2 * i_tp, h, dtype=wdtype), requires_grad=False)
        self.w2 = nn.Parameter(torch.empty(e_local, h, i_tp, dtype=wdtype), requires_grad=False)
        self.w13_scale = self.w2_scale = None
        if quant is None:
            return
        if quant.block is not None and (i_tp % quant.block[0] or i_tp % quant.block[1]):
            raise ValueError(f"FP8 blocks {quant.block} do not tile this rank's expert "
                             f"intermediate size {i_tp} (I {i} over MoE-TP {self.moe_tp_size}): "
                             "serve with a TP size that keeps I / TP a multiple of the block")
        for name, w in (("w13_scale", self.w13), ("w2_scale", self.w2)):
            shape = fp8.scale_shape(tuple(w.shape), quant.block)
            setattr(self, name, nn.Parameter(torch.empty(shape), requires_grad=False))

    @property
    def local_experts(self) -> range:
        """The ids of the experts this rank keeps."""
        return range(self.e_start, self.e_start + self.e_local)

    def expert_bytes(self) -> int:
        """Bytes of this rank's routed-expert weights and scales."""
        return sum(p.numel() * p.element_size() for p in (self.w13, self.w2, self.w13_scale,
                                                          self.w2_scale) if p is not None)

    def describe(self) -> str:
        return "bf16" if self.quant is None else self.quant.describe()

    def scales(self) -> dict:
        """fused_moe's FP8 keyword arguments (empty for bf16 experts)."""
        if self.quant is None:
            return {}
        return {"w13_scale": self.w13_scale, "w2_scale": self.w2_scale,
                "block_shape": self.quant.block, "act_quant": self.act_quant}

    def load_expert(self, e: int, which: str, w: torch.Tensor, name: str,
                    part: str = "weight") -> bool:
        """Expert e's `which` projection, `part` "weight" or a scale name, full checkpoint
        tensor in. False if another EP rank owns e (checked, not kept). KeyError: a tensor
        this store has no place for (an expert id past E, a scale its format lacks)."""
        if not 0 <= e < self.num_experts:
            raise KeyError(name)  # an expert this model does not have: unexpected
        q = self.quant
        if part != "weight" and (q is None or not q.serialized or part != q.scale_name):
            raise KeyError(name)  # a scale this checkpoint's format does not have
        down = which == "down_proj"
        full = (self.h, self.i) if down else (self.i, self.h)
        if part == "weight":
            _check(name, w, full, fp8.FP8 if q is not None and q.serialized else None)
            if (q is None or not q.serialized) and w.dtype == fp8.FP8:
                raise ValueError(f"{name}: an FP8 tensor, but the checkpoint's config declares "
                                 "no FP8 quantization_config")
        else:
            shape = fp8.scale_shape(full, q.block)
            _check(name, w, shape + (1,) if q.block is None else shape, None)
            w = w.reshape(shape)
        local = e - self.e_start
        if not 0 <= local < self.e_local:
            return False
        if q is not None and not q.serialized:  # bf16 in, this rank's shard quantized here
            shard = self._shard(w, down, None).to(self.w13.device)  # quantized where it lives
            wq, s = fp8.quantize_block(shard, q.block)
            self._copy("w2" if down else "w13", local, which, wq)
            self._copy("w2_scale" if down else "w13_scale", local, which, s)
            return True
        target = ("w2" if down else "w13") + ("" if part == "weight" else "_scale")
        block = None if part == "weight" else (q.block or (1, 1))
        self._copy(target, local, which, self._shard(w, down, block))
        return True

    def _shard(self, t: torch.Tensor, down: bool, block: tuple[int, int] | None) -> torch.Tensor:
        """This MoE-TP rank's slice of I: rows of gate / up, columns of down (in blocks for a
        block scale; a channel scale of down, over H, is not split)."""
        dim = 1 if down else 0
        if t.dim() <= dim:
            return t
        n = self.i_tp // (block[dim] if block else 1)
        return t.narrow(dim, self.moe_tp_rank * n, n)

    def _copy(self, target: str, local: int, which: str, t: torch.Tensor) -> None:
        param = getattr(self, target)
        if which == "down_proj":
            param.data[local].copy_(t)
            return
        half = param.shape[1] // 2  # gate rows (or row blocks), then up
        rows = slice(0, half) if which == "gate_proj" else slice(half, 2 * half)
        param.data[local, rows].copy_(t)

    def load_fused(self, which: str, w: torch.Tensor, name: str) -> None:
        """A stacked bf16 `gate_up_proj` [E, 2I, H] or `down_proj` [E, H, I] (transformers'
        layout): this rank's experts' slices."""
        if self.quant is not None and self.quant.serialized:
            raise ValueError(f"{name}: FP8 checkpoints keep per-expert tensors "
                             "(experts.N.gate_proj.weight + scale), not fused ones")
        if which == "down_proj":
            _check(name, w, (self.num_experts, self.h, self.i), None)
            for e in self.local_experts:
                self.load_expert(e, "down_proj", w[e], name)
            return
        _check(name, w, (self.num_experts, 2 * self.i, self.h), None)
        for e in self.local_experts:
            gate, up = w[e].split(self.i)
            self.load_expert(e, "gate_proj", gate, name)
            self.load_expert(e, "up_proj", up, name)


def _value(x) -> str:
    return str(getattr(x, "value", x))


def _check(name: str, w: torch.Tensor, shape: tuple, dtype: torch.dtype | None) -> None:
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"{name}: checkpoint shape {tuple(w.shape)}, expected {tuple(shape)}")
    if dtype is not None and w.dtype != dtype:
        raise ValueError(f"{name}: checkpoint dtype {w.dtype}, expected {dtype}")

"""FP8 experts load strictly (no server): tiny block- and channel-FP8 checkpoints through the real
loader table (`rio_sglang.weights.RULES`) into `rio_sglang.layers.experts.ExpertStore`, whole and as
TP / EP shards; a missing, unexpected, misshapen or mistyped scale is named; `--quantization
fp8` quantizes bf16 experts as they load at half the bytes."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rio_kernels.fused_moe import fp8
from rio_sglang.layers.experts import ExpertQuant, ExpertStore
from rio_sglang.tiny import PRESETS, write_tiny_checkpoint
from rio_sglang.tiny.fp8 import dequantized
from rio_sglang.weights import RULES, WeightLoadError, load_checkpoint

P = PRESETS["tiny"]
E, H, I, LAYERS, BLOCK = P.experts, P.hidden, P.expert_inter, P.layers, P.fp8_block
QUANT = {"block": ExpertQuant(BLOCK), "channel": ExpertQuant(None), "bf16": None}
SCALE = "model.language_model.layers.1.mlp.experts.3.up_proj.weight_scale_inv"


def read(ckpt) -> dict:
    tensors = {}
    for shard in sorted(ckpt.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8")
    return {kind: read(write_tiny_checkpoint(root / kind, "tiny", seed=0,
                                             fp8=None if kind == "bf16" else kind))
            for kind in QUANT}


class Experts(nn.Module):
    """The text model's routed experts only, under our model's parameter names."""

    def __init__(self, quant, moe_tp=(0, 1), ep=(0, 1)):
        super().__init__()
        e_local = E // ep[1]
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(nn.Module() for _ in range(LAYERS))
        for layer in self.model.layers:
            layer.mlp = ExpertStore(E, e_local, ep[0] * e_local, H, I, moe_tp, quant,
                                    torch.float32)
        self.tp_size = moe_tp[1]


def experts_only(tensors: dict) -> list:
    return [(n, t) for n, t in sorted(tensors.items()) if ".mlp.experts." in n]


def stacked(tensors: dict, layer: int, proj: str) -> torch.Tensor:
    """[E, N, K] fp32 of one projection over all experts (dequantized already)."""
    pre = f"model.language_model.layers.{layer}.mlp.experts"
    return torch.stack([tensors[f"{pre}.{e}.{proj}.weight"].float() for e in range(E)])


# kind, MoE-TP (rank, size), EP (rank, size)
LAYOUTS = [("block", (0, 1), (0, 1)), ("block", (1, 2), (0, 1)), ("block", (0, 1), (1, 2)),
           ("channel", (0, 1), (0, 1)), ("channel", (1, 2), (1, 2))]


@pytest.mark.parametrize("kind,moe_tp,ep", LAYOUTS, ids=[f"{k}-tp{t[1]}r{t[0]}-ep{e[1]}r{e[0]}"
                                                         for k, t, e in LAYOUTS])
def test_fp8_experts_load_their_shard_exactly(ckpts, kind, moe_tp, ep):
    model = Experts(QUANT[kind], moe_tp, ep)
    load_checkpoint(model, experts_only(ckpts[kind]))
    want = dequantized(ckpts[kind], BLOCK if kind == "block" else None)
    i_tp, e_local = I // moe_tp[1], E // ep[1]
    rows, experts = slice(moe_tp[0] * i_tp, (moe_tp[0] + 1) * i_tp), slice(ep[0] * e_local,
                                                                         (ep[0] + 1) * e_local)
    for layer in (0, LAYERS - 1):
        mlp = model.model.layers[layer].mlp
        gate, up = (stacked(want, layer, p)[experts, rows] for p in ("gate_proj", "up_proj"))
        down = stacked(want, layer, "down_proj")[experts][:, :, rows]
        block = mlp.quant.block
        assert mlp.w13.dtype == mlp.w2.dtype == fp8.FP8
        assert torch.equal(fp8.dequantize(mlp.w13, mlp.w13_scale, block), torch.cat([gate, up], 1))
        assert torch.equal(fp8.dequantize(mlp.w2, mlp.w2_scale, block), down)


def drop_scale(t):
    del t[SCALE]


def channel_scale_in_block(t):
    t[SCALE.replace("weight_scale_inv", "weight_scale")] = torch.ones(I, 1)


def misshapen_scale(t):
    t[SCALE] = torch.ones(I // BLOCK[0] + 1, H // BLOCK[1])


def bf16_weight(t):
    name = SCALE.replace("weight_scale_inv", "weight")
    t[name] = t[name].float().to(torch.bfloat16)


def scale_for_missing_expert(t):
    t[SCALE.replace("experts.3", f"experts.{E}")] = t[SCALE].clone()


# checkpoint edit, what the error must say
EDITS = [
    (drop_scale, r"1 missing: model\.layers\.1\.mlp\.w13_scale"),
    (channel_scale_in_block, (r"1 unexpected: model\.language_model\.layers\.1\.mlp\.experts\.3\."
                              r"up_proj\.weight_scale$")),
    (misshapen_scale, re.escape(f"wrongly shaped: {SCALE}: checkpoint shape (3, 4), "
                                "expected (2, 4)")),
    (bf16_weight, (r"up_proj\.weight: checkpoint dtype torch\.bfloat16, expected "
                   r"torch\.float8_e4m3fn")),
    (scale_for_missing_expert, (r"1 unexpected: model\.language_model\.layers\.1\.mlp\.experts\.8"
                                r"\.up_proj\.weight_scale_inv")),
]


@pytest.mark.parametrize("edit,message", EDITS, ids=[e[0].__name__ for e in EDITS])
def test_a_bad_scale_is_named(ckpts, edit, message):
    tensors = dict(ckpts["block"])
    edit(tensors)
    with pytest.raises(WeightLoadError, match=message):
        load_checkpoint(Experts(QUANT["block"]), experts_only(tensors))


def test_an_fp8_checkpoint_without_its_config_is_refused(ckpts):
    """FP8 tensors into a bf16 model (a quantization_config lost): every one named."""
    n = LAYERS * E * 3
    with pytest.raises(WeightLoadError, match=rf"{n} unexpected: .*weight_scale.*{n} wrongly "
                                              r"shaped: .*: an FP8 tensor, but the checkpoint"):
        load_checkpoint(Experts(QUANT["bf16"]), experts_only(ckpts["channel"]))


def test_blocks_that_straddle_a_tp_shard_are_refused():
    with pytest.raises(ValueError, match=r"FP8 blocks \(16, 16\) do not tile .* size 8"):
        ExpertStore(E, E, 0, H, I, (0, 4), QUANT["block"], torch.float32)


def test_quantization_fp8_halves_bf16_experts_as_they_load(ckpts):
    """`--quantization fp8` on a bf16 checkpoint: block scales made at load, per shard."""
    bf16, online = Experts(QUANT["bf16"], (1, 2)), Experts(ExpertQuant(BLOCK, serialized=False),
                                                           (1, 2))
    load_checkpoint(bf16, experts_only(ckpts["bf16"]))
    load_checkpoint(online, experts_only(ckpts["bf16"]))
    for a, b in zip(bf16.model.layers, online.model.layers, strict=True):
        for w, q, s in ((a.mlp.w13, b.mlp.w13, b.mlp.w13_scale), (a.mlp.w2, b.mlp.w2, b.mlp.w2_scale)):
            assert q.dtype == fp8.FP8
            # e4m3 keeps 3 mantissa bits: within 1/16 of each block's largest weight.
            err = (fp8.dequantize(q, s, BLOCK) - w).abs()
            amax = s.repeat_interleave(BLOCK[0], -2).repeat_interleave(BLOCK[1], -1) * fp8.FP8_MAX
            assert (err <= amax[..., : w.shape[-2], : w.shape[-1]] / 16).all()
    bf16_bytes = sum(p.numel() * 2 for n, p in bf16.named_parameters())  # as served (bf16)
    fp8_bytes = sum(layer.mlp.expert_bytes() for layer in online.model.layers)
    assert bf16_bytes / 2 < fp8_bytes < 0.52 * bf16_bytes


def test_every_tensor_of_an_all_fp8_checkpoint_has_a_rule(tmp_path):
    """`--fp8-linears` (the released layout: attention, GDN and shared-expert projections in
    FP8 too; served by SGLang's FP8 linear methods, GPU only): every name has a loader rule,
    every scale the shape its weight implies."""
    for kind in ("block", "channel"):
        tensors = read(write_tiny_checkpoint(tmp_path / kind, "tiny", fp8=kind, fp8_linears=True))
        unmatched = [n for n in tensors if not any(r.pattern.match(n) for r in RULES)]
        assert unmatched == []
        scales = {n: t for n, t in tensors.items() if ".weight_scale" in n}
        assert any(".self_attn.q_proj." in n for n in scales)
        assert any(".linear_attn.in_proj_qkv." in n for n in scales)
        for name, s in scales.items():
            w = tensors[name.rsplit(".", 1)[0] + ".weight"]
            assert w.dtype == fp8.FP8
            want = fp8.scale_shape(tuple(w.shape), BLOCK if kind == "block" else None)
            assert tuple(s.shape) == (want if kind == "block" else want + (1,)), name


# Our SGLang linears' prefixes (the checkpoint's module names; qkv_proj and the shared expert's
# gate_up are our fused layers) and whether the FP8 layouts convert them.
PREFIXES = [f"model.language_model.layers.{n}" for n in (
    "0.linear_attn.in_proj_qkv", "0.linear_attn.in_proj_z", "0.linear_attn.out_proj",
    "3.self_attn.qkv_proj", "3.self_attn.o_proj", "1.mlp.shared_expert.gate_up",
    "1.mlp.shared_expert.down_proj")]
KEPT = [f"model.language_model.layers.{n}" for n in (
    "0.linear_attn.in_proj_a", "0.linear_attn.in_proj_b", "2.mlp.gate",
    "2.mlp.shared_expert_gate")]


@pytest.mark.parametrize("linears", [False, True], ids=["experts-only", "fp8-linears"])
def test_sglang_quant_configs_convert_what_the_writer_says(linears):
    """SGLang's own ignore-list matching on our prefixes: with experts-only tiny checkpoints every
    linear stays bf16 (what lets the CPU serve them); `--fp8-linears` converts the projections."""
    from sglang.srt.layers.quantization.compressed_tensors.utils import should_ignore_layer
    from sglang.srt.layers.quantization.fp8 import Fp8Config
    from sglang.srt.layers.quantization.utils import is_layer_skipped

    from rio_sglang.tiny.fp8 import quantization_config

    block = Fp8Config.from_config(quantization_config("block", BLOCK, linears))
    assert block.weight_block_size == list(BLOCK) and block.is_checkpoint_fp8_serialized
    ignore = quantization_config("channel", BLOCK, linears)["ignore"]
    for prefix in PREFIXES + KEPT:
        kept = prefix in KEPT or not linears
        assert is_layer_skipped(prefix, block.ignored_layers) == kept, prefix
        assert should_ignore_layer(prefix, ignore) == kept, prefix


# (RIO_MOE_W8A8, experts, fused_moe's act_quant): w8a8 prefill is opt-in, for FP8 experts only.
W8A8_SWITCH = [(None, "block", False), ("0", "channel", False), ("1", "block", True),
               ("1", "channel", True), ("1", "bf16", None)]


@pytest.mark.parametrize("flag, kind, act_quant", W8A8_SWITCH)
def test_w8a8_prefill_is_opt_in(monkeypatch, flag, kind, act_quant):
    if flag is None:
        monkeypatch.delenv("RIO_MOE_W8A8", raising=False)
    else:
        monkeypatch.setenv("RIO_MOE_W8A8", flag)
    store = ExpertStore(E, E, 0, H, I, (0, 1), QUANT[kind], torch.float32)
    assert store.scales().get("act_quant") is act_quant

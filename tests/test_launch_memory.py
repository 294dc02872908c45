"""launch/memory.py and launch/params.py: the parameter table matches the checkpoint's metadata,
transformers' model and a generated checkpoint; the memory calculator matches hand counts."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from launch.memory import RIO_CONFIG, estimate, gdn_state_bytes_per_seq, kv_bytes_per_token
from launch.params import weights
from rio_sglang.targets import read_target

CFG = json.loads(RIO_CONFIG.read_text())
NODE_ENV = {"NODE_RANK": "1", "DIST_INIT_ADDR": "10.0.0.1:5000"}

# The parameter table, checked against independent counts

def test_parameter_table_matches_the_checkpoint_metadata():
    facts = CFG["rio_checkpoint"]
    table = weights(CFG, mtp=True)
    assert sum(w.numel for w in table) == facts["tensor_parameters"]  # 403,397,928,944
    # BF16 everywhere but 8,640 F32 values: the index's total size to the byte.
    assert 2 * facts["tensor_parameters"] + 2 * facts["f32_values"] == facts["index_total_size"]


def test_parameter_table_matches_transformers_model():
    import torch
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3_5MoeForConditionalGeneration(Qwen3_5MoeConfig.from_dict(CFG))
    hf = {n: p.numel() for n, p in model.named_parameters()}
    ours = weights(CFG)  # transformers has no MTP head

    def hf_sum(part):
        return sum(v for n, v in hf.items() if part in n)

    assert sum(w.numel for w in ours) == sum(hf.values())
    assert sum(w.numel for w in ours if w.group == "vision") == hf_sum("visual.")
    for layer in (0, 3):  # a Gated DeltaNet layer, a full-attention layer
        assert sum(w.numel for w in ours if w.layer == layer) == hf_sum(f".layers.{layer}.")


def test_parameter_table_matches_a_generated_checkpoint(tmp_path):
    from rio_sglang.checkpoint import shard_header
    from rio_sglang.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path / "tiny", "tiny", seed=0)
    stored = sum(math.prod(t["shape"]) for shard in sorted(path.glob("*.safetensors"))
                 for t in shard_header(shard).values())
    assert sum(w.numel for w in weights(json.loads((path / "config.json").read_text()))) == stored


# Memory of h200x8 at 262,144 and 1,048,576 tokens, counted by hand from the config

H, V, E, I, IS = 4096, 248_320, 512, 1024, 1024  # hidden, vocab, experts, expert I, shared I
HQ, HKV, D = 32, 2, 256  # full attention: q heads, KV heads, head dim
HK, HV, DK, DV, K = 16, 64, 128, 128, 4  # Gated DeltaNet heads, head dims, conv kernel
TP, BF16, FP32 = 8, 2, 4


def h200x8_weights_by_hand() -> int:
    """Bytes on each of the 8 GPUs: elements split over TP count 1/8, replicated ones whole."""
    conv_dim = 2 * HK * DK + HV * DV  # [q | k | v] of a Gated DeltaNet layer
    C, CI, M, OUT = 1152, 4304, 1152 * 2 * 2, 4096  # vision width, MLP, merger input, output
    split = (2 * V * H  # embed_tokens, lm_head (248,320 rows = 8 x 31,040)
             + 60 * (E * 3 * I * H + 3 * IS * H)  # every layer: experts w13 + w2, shared expert
             + 15 * (2 * HQ * D * H + H * HQ * D)  # attention: q_proj [q | gate], o_proj
             + 45 * (conv_dim * H + HV * DV * H + 2 * HV * H + conv_dim * K + HV
                     + H * HV * DV)  # GDN: in_proj_qkv, _z, _b, _a, conv1d, dt_bias, out_proj
             + 27 * (3 * C * (C + 1) + C * C + CI * (C + 1) + C * CI)  # vision blocks
             + 2304 * C + M * (M + 1) + OUT * M)  # vision pos_embed, merger fc1, fc2
    whole = (H  # final norm
             + 60 * (2 * H + E * H + H)  # two norms, router, shared_expert_gate
             + 15 * (2 * D * H + 2 * D)  # k_proj, v_proj: one whole KV head each; q/k norms
             + 45 * DV  # GDN gated norm
             + C * 3 * 2 * 16 * 16 + C  # patch embedding and its bias
             + 27 * (4 * C + 2 * C)  # per block: two LayerNorms, proj and fc2 biases
             + 2 * C + OUT)  # merger LayerNorm, fc2 bias
    a_log = 45 * (HV // TP) * FP32  # SGLang keeps A_log in fp32
    return (split // TP + whole) * BF16 + a_log


@pytest.mark.parametrize("context", [262_144, 1_048_576])
def test_h200x8_memory_matches_hand_count(context):
    est = estimate(CFG, read_target("h200x8"), context=context, concurrency=1)
    (stage,) = est.stages
    kv_per_token = 15 * 2 * 1 * D * BF16  # 15 attention layers, K and V, one KV head per GPU
    # conv state [conv_dim / 8, K - 1] in bf16, SSM state [64 / 8, 128, 128] in fp32
    conv, ssm = (2 * HK * DK + HV * DV) // TP * (K - 1) * BF16, HV // TP * DK * DV * FP32
    state_per_seq = 45 * (conv + ssm)
    assert stage.weights == h200x8_weights_by_hand() == 99_472_735_116
    assert stage.kv_per_token == kv_per_token == 15_360
    assert stage.kv == kv_per_token * context  # 3.75 GiB at 262,144; 15 GiB at 1,048,576
    assert stage.state == state_per_seq == 24_007_680
    assert stage.latent_embed == 0  # each TP rank mixes the vocab shard it embeds with
    assert stage.total == stage.weights + stage.kv + stage.state + stage.latent_embed
    assert stage.total < est.gpu_bytes


def h100x8_fp8_by_hand() -> tuple[int, int]:
    """(weight bytes, fp32 scale bytes) on each of 8 GPUs under --quantization fp8: the bf16
    count less one byte per e4m3 element; experts scaled per 128 x 128 block of the I-shard,
    the other projections per output row; the router and shared_expert_gate stay bf16."""
    conv_dim = 2 * HK * DK + HV * DV
    experts = 60 * E * 3 * I * H // TP
    attn = 15 * (2 * HQ * D * H // TP + 2 * D * H + H * HQ * D // TP)  # k, v: one whole head
    gdn = 45 * (conv_dim * H + HV * DV * H + 2 * HV * H + H * HV * DV) // TP
    shared = 60 * 3 * IS * H // TP
    i_tp = I // TP  # 128: one block wide
    expert_scales = 60 * E * (2 * i_tp // 128 * H // 128 + H // 128 * i_tp // 128)
    row_scales = (15 * (2 * HQ * D // TP + 2 * D + H)  # q, k, v, o (row parallel: H rows)
                  + 45 * (conv_dim // TP + HV * DV // TP + 2 * HV // TP + H)
                  + 60 * (2 * IS // TP + H))  # shared gate_up, down
    return (h200x8_weights_by_hand() - (experts + attn + gdn + shared),
            (expert_scales + row_scales) * FP32)


def test_rio_in_fp8_fits_8_h100_at_native_context():
    target = read_target("h100x8-fp8")
    est = estimate(CFG, target, context=262_144)
    (stage,) = est.stages
    assert (stage.weights, stage.scales) == h100x8_fp8_by_hand() == (50_176_228_236, 14_441_280)
    assert stage.kv == 15 * 2 * D * BF16 * 262_144
    assert stage.total == stage.weights + stage.scales + stage.kv + stage.state + stage.latent_embed
    assert stage.total < 0.7 * est.gpu_bytes  # 52.4 of 79.6 GiB
    # The same node in bf16 does not hold the weights alone.
    bf16 = replace(target, args=tuple(a for a in target.args if a not in ("--quantization", "fp8")))
    assert estimate(CFG, bf16, context=262_144).stages[0].weights > est.gpu_bytes


def test_whole_model_cache_matches_the_model_facts():
    text = CFG["text_config"]
    assert kv_bytes_per_token(text, tp=1, attn_layers=15) == 30 * 1024  # "~30 KiB per token"
    assert gdn_state_bytes_per_seq(text, tp=1, gdn_layers=45) == 192_061_440  # "~183 MiB"


def test_pipeline_stages_hold_their_own_layers():
    est = estimate(CFG, read_target("h100x16-2node", NODE_ENV), context=262_144)
    assert [(s.layers, s.attn_layers, s.gdn_layers) for s in est.stages] == \
        [(range(30), 7, 23), (range(30, 60), 8, 22)]
    assert est.worst.kv_per_token == 8 * 2 * D * BF16
    # latent steps are mixed on the last stage: it alone copies rows, its rank's V/8 (242 MiB)
    assert [s.latent_embed for s in est.stages] == [0, -(-V // 8) * H * BF16]
    assert est.worst.total < est.gpu_bytes


@pytest.mark.parametrize("argv,bound", [([], 1024), (["--resume-memory-mib", "0"], 0)])
def test_the_host_bound_of_retracted_latent_requests_is_printed(argv, bound, capsys,
                                                                 monkeypatch):
    """Each rank's host memory for soft inputs (tests/test_resume.py): the bound and what one
    latent step takes, H x 2 bytes (8,192 for Rio)."""
    from launch import memory

    monkeypatch.delenv("RIO_RESUME_MEMORY_MIB", raising=False)
    assert memory.main(["--target", "h200x8", *argv]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(f"host memory per rank: up to {bound:,} MiB")
    steps = bound * 2**20 // (CFG["text_config"]["hidden_size"] * 2)
    assert f"8,192 B per latent step: {steps:,} steps" in line

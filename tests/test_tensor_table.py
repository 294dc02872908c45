"""One tensor table (rio_sglang/tensor_table.py) for the loader and the memory calculator: read
forwards, its tensors are exactly those the tiny checkpoint writer writes (transformers' own
modules), and the calculator's weight bytes per pipeline stage equal those tensors as the loader
of each stage keeps them (SGLang's own layer split), on the tiny presets and rio-slice-4's
config; under `--quantization fp8` its routed experts equal the loader's ExpertStore."""

from __future__ import annotations

import functools
import json
import math
from types import SimpleNamespace as NS

import pytest
import torch

from launch.memory import estimate, fp8_rank_bytes
from launch.params import weights
from rio_sglang.checkpoint import shard_header
from rio_sglang.targets import Target
from rio_sglang.tensor_table import EMBED
from rio_sglang.tiny import PRESETS, write_tiny_checkpoint
from rio_sglang.tiny.presets import build_config
from rio_sglang.tiny.tokenizer import SPECIAL_TOKENS
from rio_sglang.tiny.writer import checkpoint_tensors, mtp_tensors
from rio_sglang.weights import elsewhere

LAYOUTS = ("per-expert", "fused")
SHAPED = ["tiny", "tiny-deep", "tiny-wide", "rio-slice-4"]


def config(preset: str) -> dict:
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}  # token ids do not change any shape
    return build_config(PRESETS[preset], ids).to_dict()


@functools.cache
def writer_tensors(preset: str, layout: str) -> dict[str, tuple]:
    """{key: shape} the writer writes for `preset` with its MTP head: its own key mapping over
    transformers' model built on the meta device (rio-slice-4 is config-only: ~56 GB)."""
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    cfg = Qwen3_5MoeConfig.from_dict(config(preset))
    with torch.device("meta"):
        state = Qwen3_5MoeForConditionalGeneration(cfg).state_dict()
        state.update(mtp_tensors(cfg.text_config, 0.02))
    return {k: tuple(t.shape) for k, t in checkpoint_tensors(state, layout).items()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[dict, dict]:
    """(config.json, {key: shape}) of a tiny checkpoint written to disk, read from its shards."""
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("table") / "tiny", "tiny", mtp=True)
    shapes = {k: tuple(t["shape"]) for shard in sorted(path.glob("*.safetensors"))
              for k, t in shard_header(shard).items()}
    return json.loads((path / "config.json").read_text()), shapes


def table_tensors(cfg: dict, layout: str) -> dict[str, tuple]:
    return {w.name: w.shape for w in weights(cfg, mtp=True, layout=layout)}


def test_the_table_lists_the_written_checkpoint(written):
    cfg, shapes = written
    assert table_tensors(cfg, "per-expert") == shapes


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("preset", SHAPED)
def test_the_table_lists_what_the_writer_writes(preset, layout):
    assert table_tensors(config(preset), layout) == writer_tensors(preset, layout)


def nbytes(key: str, shape: tuple) -> int:
    """As our layers hold it: bf16, A_log fp32 (layers/gdn.py)."""
    return math.prod(shape) * (4 if key.endswith(".A_log") else 2)


def kept(key: str, stage: int, pp: int, layers: int) -> bool:
    """Does the loader of pipeline stage `stage` of `pp` keep `key`? The stage owns the layers
    SGLang's get_pp_indices gives it; every stage reads the embedding and the first keeps it."""
    from sglang.srt.distributed.utils import get_pp_indices

    start, end = get_pp_indices(layers, stage, pp)
    text = NS(pp_group=NS(is_first_rank=stage == 0, is_last_rank=stage == pp - 1),
              owns_layer=lambda i: start <= i < end)
    model = NS(model=text, config=NS(num_hidden_layers=layers))
    return stage == 0 if key == EMBED.source else not elsewhere(model, key)


# preset, pipeline stages (tiny-deep's 8 layers over 3: SGLang gives the last two stages 3)
STAGES = [("tiny", 1), ("tiny", 2), ("tiny", 4), ("tiny-deep", 3), ("tiny-wide", 2),
          ("rio-slice-4", 1), ("rio-slice-4", 2)]


@pytest.mark.parametrize("preset,pp", STAGES, ids=[f"{p}-pp{n}" for p, n in STAGES])
def test_calculator_stages_hold_what_their_loaders_keep(preset, pp):
    cfg, shapes = config(preset), writer_tensors(preset, "per-expert")
    layers = cfg["text_config"]["num_hidden_layers"]
    target = Target(f"{preset}-pp{pp}", ("--pp-size", str(pp)))
    est = estimate(cfg, target, context=1)
    target_model = {k: s for k, s in shapes.items() if not k.startswith("mtp.")}
    assert [s.weights for s in est.stages] == [
        sum(nbytes(k, s) for k, s in target_model.items() if kept(k, stage, pp, layers))
        for stage in range(pp)]
    # --mtp: the MTP head's own tensors (it shares the embedding and lm_head), on the last stage
    with_mtp = estimate(cfg, target, context=1, mtp=True)
    assert [a.weights - b.weights for a, b in zip(with_mtp.stages, est.stages)] == \
        [0] * (pp - 1) + [sum(nbytes(k, s) for k, s in shapes.items() if k.startswith("mtp."))]


# preset, TP size: blocks of 128 (rio-slice-4), 32, 16 and 8 (tiny-wide's I / TP)
FP8 = [("tiny", 1), ("tiny", 2), ("tiny-wide", 2), ("rio-slice-4", 1), ("rio-slice-4", 8)]


@pytest.mark.parametrize("preset,tp", FP8, ids=[f"{p}-tp{n}" for p, n in FP8])
def test_fp8_experts_are_the_loaders_expert_store(preset, tp):
    """`--quantization fp8`: one layer's routed experts on one of `tp` ranks, e4m3 and fp32
    scales, as the calculator counts them and as the loader's ExpertStore holds them."""
    from rio_sglang.layers.experts import ExpertStore, expert_quant

    cfg = config(preset)
    text = cfg["text_config"]
    e, h, i = text["num_experts"], text["hidden_size"], text["moe_intermediate_size"]
    online = NS(get_name=lambda: "fp8", is_checkpoint_fp8_serialized=False)  # SGLang's Fp8Config
    with torch.device("meta"):
        store = ExpertStore(e, e, 0, h, i, (tp - 1, tp), expert_quant(online, i // tp, h),
                            torch.bfloat16)
    for layout in LAYOUTS:
        experts = [w for w in weights(cfg, layout=layout) if w.layer == 0 and w.split == "experts"]
        assert sum(sum(fp8_rank_bytes(w, tp, text, ())) for w in experts) == store.expert_bytes()

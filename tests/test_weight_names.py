"""The strict loader names checkpoint keys (no server): tiny per-expert and fused checkpoints
loaded in-process through the real table (`rio_sglang.weights`) into our routed experts, router
and layer norms. A missing tensor is named by its key beside the parameter it would fill; an
unexpected, misshapen or repeated one by its key; another EP rank's or stage's are left alone."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rio_sglang.layers.experts import ExpertStore
from rio_sglang.tiny import PRESETS, write_tiny_checkpoint
from rio_sglang.weights import MTP_RULES, WeightLoadError, load_checkpoint, mtp_name

P = PRESETS["tiny"]
E, H, I, LAYERS = P.experts, P.hidden, P.expert_inter, P.layers
LM = "model.language_model.layers"
HELD = re.compile(r"(^|\.)layers\.\d+\.(mlp\.experts\.|mlp\.gate\.weight$|input_layernorm\.)")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Each layout's tensors of what `Skeleton` holds (the per-expert one with its MTP head)."""
    root, out = tmp_path_factory.mktemp("names"), {}
    for layout in ("per-expert", "fused"):
        path = write_tiny_checkpoint(root / layout, "tiny", seed=0, expert_layout=layout,
                                     mtp=layout == "per-expert")
        out[layout] = {n: t for shard in sorted(path.glob("*.safetensors"))
                       for n, t in load_file(shard).items() if HELD.search(n)}
    return out


class Skeleton(nn.Module):
    """Our text model's parameters for `HELD` (`model.layers.N.mlp.w13`, `...mlp.gate.weight`,
    `...input_layernorm.weight`) on expert-parallel rank `ep` and layers [start, end) of
    `layers`, with the stage interface `weights.elsewhere` reads."""

    def __init__(self, ep=(0, 1), start=0, end=LAYERS, layers=LAYERS):
        super().__init__()
        self.tp_size, self.config = 1, SimpleNamespace(num_hidden_layers=layers)
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(nn.Module() for _ in range(layers))
        for layer in self.model.layers[start:end]:
            e_local = E // ep[1]
            layer.mlp = ExpertStore(E, e_local, ep[0] * e_local, H, I, (0, 1), None,
                                    torch.float32)
            layer.mlp.gate = nn.Linear(H, E, bias=False)
            layer.input_layernorm = nn.Module()
            layer.input_layernorm.weight = nn.Parameter(torch.empty(H), requires_grad=False)
        if (start, end) != (0, layers):
            self.model.pp_group = SimpleNamespace(is_first_rank=start == 0,
                                                  is_last_rank=end == layers)
            self.model.owns_layer = lambda i: start <= i < end


def drop(key):
    return lambda t: t.pop(key)


def add(key, like):
    """Add `key` holding a copy of `like(tensors)`."""
    return lambda t: t.__setitem__(key, like(t).clone())


def resize(key):
    return lambda t: t.__setitem__(key, t[key][1:].clone())


DOWN0 = f"{LM}.0.mlp.experts.0.down_proj.weight"
GATE2 = f"{LM}.1.mlp.experts.2.gate_proj.weight"
FUSED_DOWN, FUSED_GATE_UP = f"{LM}.0.mlp.experts.down_proj", f"{LM}.3.mlp.experts.gate_up_proj"


def q(text: str) -> str:
    return re.escape(text) + "$"  # the whole rest of the message: nothing else is reported


# layout, checkpoint edit, skeleton, what the error ends with (None: loads)
CASES = [
    ("per-expert", drop(DOWN0), {}, q(f"1 missing: model.layers.0.mlp.w2 needs {DOWN0}")),
    ("per-expert", drop(GATE2), {},
     q(f"1 missing: model.layers.1.mlp.w13 needs {GATE2}")),
    ("fused", drop(FUSED_DOWN), {}, q(f"1 missing: model.layers.0.mlp.w2 needs {FUSED_DOWN}")),
    ("fused", drop(FUSED_GATE_UP), {},
     q(f"1 missing: model.layers.3.mlp.w13 needs {FUSED_GATE_UP}")),
    ("per-expert", drop(f"{LM}.2.mlp.gate.weight"), {},
     q(f"1 missing: model.layers.2.mlp.gate.weight needs {LM}.2.mlp.gate.weight")),
    ("per-expert", add(f"{LM}.0.mlp.experts.{E}.up_proj.weight", lambda t: t[GATE2]), {},
     q(f"1 unexpected: {LM}.0.mlp.experts.{E}.up_proj.weight")),
    ("fused", add(DOWN0, lambda t: t[FUSED_DOWN][0]), {},
     q(f"1 unexpected: {DOWN0}")),  # a per-expert tensor beside the fused ones
    ("per-expert", resize(GATE2), {}, q(f"1 wrongly shaped: {GATE2}: checkpoint shape "
                                        f"({I - 1}, {H}), expected ({I}, {H}) "
                                        "(fills model.layers.1.mlp.w13)")),
    ("fused", resize(FUSED_DOWN), {}, q(f"1 wrongly shaped: {FUSED_DOWN}: checkpoint shape "
                                        f"({E - 1}, {H}, {I}), expected ({E}, {H}, {I}) "
                                        "(fills model.layers.0.mlp.w2)")),
    # Expert parallel: rank 1 of 2 keeps experts 4-7 and needs only theirs.
    ("per-expert", drop(DOWN0), {"ep": (1, 2)}, None),
    ("per-expert", drop(DOWN0.replace("experts.0", "experts.5")), {"ep": (1, 2)},
     q(f"1 missing: model.layers.0.mlp.w2 needs {DOWN0.replace('experts.0', 'experts.5')}")),
    ("fused", drop(FUSED_DOWN), {"ep": (1, 2)},
     q(f"1 missing: model.layers.0.mlp.w2 needs {FUSED_DOWN}")),
    # Pipeline parallel: the second stage holds layers 2-3 only.
    ("per-expert", drop(DOWN0), {"start": 2}, None),
    ("fused", drop(FUSED_GATE_UP), {"start": 2},
     q(f"1 missing: model.layers.3.mlp.w13 needs {FUSED_GATE_UP}")),
]


@pytest.mark.parametrize("layout,edit,skeleton,message", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_checkpoint_problems_are_named_by_key(ckpts, layout, edit, skeleton, message):
    tensors = dict(ckpts[layout])
    edit(tensors)
    model = Skeleton(**skeleton)
    if message is None:
        assert load_checkpoint(model, sorted(tensors.items())) > 0
        return
    with pytest.raises(WeightLoadError, match=r"^checkpoint does not match the model; " + message):
        load_checkpoint(model, sorted(tensors.items()))


def test_a_repeated_tensor_is_named(ckpts):
    tensors = sorted(ckpts["per-expert"].items())
    with pytest.raises(WeightLoadError, match=q(f"; 1 loaded twice: {GATE2}")):
        load_checkpoint(Skeleton(), tensors + [(GATE2, ckpts["per-expert"][GATE2])])


def test_both_layouts_fill_the_same_parameters(ckpts):
    """The fused checkpoint holds the per-expert one's tensors stacked (same seed): loaded by
    their own rows, every parameter comes out equal."""
    per_expert, fused = Skeleton(), Skeleton()
    load_checkpoint(per_expert, sorted(ckpts["per-expert"].items()))
    load_checkpoint(fused, sorted(ckpts["fused"].items()))
    for (name, a), (_, b) in zip(per_expert.named_parameters(), fused.named_parameters(),
                                 strict=True):
        assert torch.equal(a, b), name
    w2 = per_expert.model.layers[0].mlp.w2[0]
    assert torch.equal(w2, ckpts["per-expert"][DOWN0].float())


def test_the_mtp_head_names_its_own_keys(ckpts):
    """The MTP draft's decoder layer reads `mtp.layers.0.*`; a missing expert is named so."""
    key = "mtp.layers.0.mlp.experts.5.down_proj.weight"
    tensors = {n: t for n, t in ckpts["per-expert"].items() if n.startswith("mtp.") and n != key}
    assert len(tensors) == 3 * E + 1  # the experts' but one, the router's, the input norm's
    with pytest.raises(WeightLoadError, match=q(f"the MTP head; 1 missing: "
                                                f"model.layers.0.mlp.w2 needs {key}")):
        load_checkpoint(Skeleton(layers=1), sorted(tensors.items()), MTP_RULES, mtp_name,
                        label="the MTP head")

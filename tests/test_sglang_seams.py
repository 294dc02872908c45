"""Every SGLang (and Triton) target we hook or patch still exists and takes the parameters our
code passes it: an SGLang upgrade that moves or reshapes one fails here, not in a server.

Targets: `rio_sglang/runtime/hooks.py::hooks` (each hook's own parameters, after its first,
are what it expects of the target; validate.py's included), the pydantic validators
`runtime/validate.py` re-wraps, and the names `rio_sglang/cpu/patches.py` rebinds.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

from rio_sglang.cpu import patches
from rio_sglang.runtime import hooks, output, validate

VAR = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def resolve(target: str):
    """The function behind a dotted target (a classmethod's or staticmethod's own function)."""
    owner, name = target.rsplit(".", 1)
    obj = pkgutil.resolve_name(owner)
    raw = obj.__dict__[name] if name in vars(obj) else getattr(obj, name)
    return getattr(raw, "__func__", raw)


def mismatch(target_fn, hook, skip: int = 1) -> str | None:
    """None when `target_fn` starts with the named parameters `hook` takes after its first
    `skip` (the original or its result), of the same kinds, and has no more unless the hook
    passes the rest on (`*args`, `**kwargs`)."""
    want = [p for p in list(inspect.signature(hook).parameters.values())[skip:]]
    named = [(p.name, p.kind) for p in want if p.kind not in VAR]
    have = [(p.name, p.kind) for p in inspect.signature(target_fn).parameters.values()]
    if have[: len(named)] != named or (len(named) == len(want) and len(have) != len(named)):
        return f"target takes {have}, the hook expects {named}"
    return None


HOOKS = hooks.hooks()


@pytest.mark.parametrize("target,kind,hook", HOOKS,
                         ids=[".".join(h[0].split(".")[-2:]) for h in HOOKS])
def test_hook_target_has_the_expected_signature(target, kind, hook):
    assert kind in ("after", "around")
    assert mismatch(resolve(target), hook) is None, target


# a stand-in SGLang could ship, the hook it would break
STAND_INS = [
    ("sglang.srt.managers.tokenizer_manager.TokenizerManager.update_request_meta_info",
     lambda self, meta_info, state, customized_info: None, output.update_meta_info),
    ("sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.checkpoint_into_tree",
     lambda self, req, up_to: None, hooks.checkpoint_into_tree),
    ("sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new",
     classmethod(lambda cls, schedule_batch, model_runner: None), hooks.init_new),
    ("sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request",
     lambda self, obj: None, validate.validate_one_request),
    ("sglang.srt.entrypoints.http_server.serve_generate_request",
     lambda obj, request, raw: None, validate.serve_generate_request),
]


@pytest.mark.parametrize("target,stand_in,hook", STAND_INS,
                         ids=[s[0].rsplit(".", 1)[1] for s in STAND_INS])
def test_a_changed_signature_fails(monkeypatch, target, stand_in, hook):
    owner, name = target.rsplit(".", 1)
    monkeypatch.setattr(pkgutil.resolve_name(owner), name, stand_in)
    assert mismatch(resolve(target), hook) is not None


def test_sglang_extension_points_exist():
    from sglang.srt.managers.scheduler_components.output_streamer import (
        SchedulerOutputStreamer,
    )
    from sglang.srt.model_executor.model_runner import ModelRunner
    from sglang.srt.plugins import hook_registry

    from rio_sglang.runtime.output import ReasoningOutputStreamer

    assert {"after", "around"} <= {t.value for t in hook_registry.HookType}
    assert hook_registry._current_plugin_source.get() is None  # outside SGLang's loader
    assert SchedulerOutputStreamer.has_additional_customized_info is False
    for name in ("build_additional_customized_info", "is_request_level_customized_info_key"):
        ours = getattr(ReasoningOutputStreamer, name)
        assert mismatch(getattr(SchedulerOutputStreamer, name), ours, skip=0) is None, name
    assert mismatch(ModelRunner.supports_sampling_observer, lambda self: None, skip=0) is None


def test_the_observer_is_handed_only_the_sampling_info():
    """Why the stepping rows ride on `SamplingBatchInfo` (hooks.py's table): SGLang's observer
    methods take the batch's sampling info and nothing that names the batch otherwise."""
    from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo
    from sglang.srt.sampling.sampling_observer import SamplingObserver

    from rio_sglang.runtime.sampler import ROWS_ATTR, ReasoningObserver

    for name in ("is_active", "before_grammar", "after_sample"):
        theirs = getattr(SamplingObserver, name)
        assert mismatch(theirs, getattr(ReasoningObserver, name), skip=0) is None, name
    assert list(inspect.signature(SamplingObserver.is_active).parameters) == [
        "self", "sampling_info"]
    assert not hasattr(SamplingBatchInfo, "__slots__") and ROWS_ATTR not in {
        f.name for f in dataclasses.fields(SamplingBatchInfo)}  # ours, settable, not theirs


@pytest.mark.parametrize("target", [t for t, _, _ in HOOKS if t.endswith("_stream")])
def test_openai_streams_still_end_with_the_done_line(target):
    from rio_sglang.runtime.output import DONE

    assert repr(DONE)[1:-1] in inspect.getsource(resolve(target))  # the chunk we insert before


def test_openai_model_validators_are_where_we_rewrap_them():
    from pydantic import BaseModel
    from sglang.srt.entrypoints.openai import protocol

    models = [m for m in vars(protocol).values() if isinstance(m, type)
              and issubclass(m, BaseModel) and m.__module__ == protocol.__name__]
    before = [d for m in models for d in m.__pydantic_decorators__.model_validators.values()
              if d.info.mode == "before"]
    assert before and all(callable(d.func) for d in before)
    assert "force" in inspect.signature(BaseModel.model_rebuild).parameters


def test_cpu_patch_targets_exist():
    import triton.language as tl
    from triton.runtime import autotuner

    op = importlib.import_module(patches._FLA_OP_MODULE)
    for name, path in patches._LATE_ALIASES.items():
        obj = tl
        for part in path:
            obj = getattr(obj, part)
        assert getattr(op, name) is obj, name  # still bound at import, from triton.language
    assert isinstance(importlib.import_module("sglang.kernels.ops.speculative.spec_tree")._is_xpu,
                      bool)
    scatter = importlib.import_module(patches._SCATTER_MODULE)
    for name in patches._SCATTER_NAMES:
        assert mismatch(getattr(scatter, name), patches.state_scatter, skip=0) is None, name
    users = importlib.import_module(patches._SCATTER_USERS[0])  # binds them at import
    assert all(hasattr(users, name) for name in patches._SCATTER_NAMES)
    assert "configs" in inspect.signature(autotuner.Autotuner.__init__).parameters


def test_the_request_fields_we_set_do_what_we_rely_on():
    """hooks.py sets two of SGLang's own `Req` fields: `to_finish`, which `update_finish_state`
    applies before any stop check (a spent answer budget, tests/test_resume.py), and
    `positional_embed_overrides` (a retracted request's soft inputs): `PositionalEmbeds` of
    absolute positions, which `ScheduleBatch.prepare_for_extend` places per prefill chunk."""
    import torch
    from sglang.srt.managers.embed_types import PositionalEmbeds
    from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
    from sglang.srt.sampling.sampling_params import SamplingParams

    req = Req("r", "", [1, 2, 3], SamplingParams(max_new_tokens=4))
    assert req.positional_embed_overrides is None and req.retraction_count == 0
    rows = [torch.ones(8), torch.zeros(8)]
    over = PositionalEmbeds(embeds=rows, positions=[3, 4])
    assert over.embeds.shape == (2, 8) and over.positions == [3, 4]
    source = inspect.getsource(ScheduleBatch.prepare_for_extend)
    assert "req.positional_embed_overrides.positions" in source and "pos - pre_len" in source
    assert inspect.getsource(Req.update_finish_state).index("self.to_finish") < inspect.getsource(
        Req.update_finish_state).index("_check_token_based_finish")

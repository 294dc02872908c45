"""Hooks into SGLang 0.5.23 for per-request reasoning (installed by the plugin in every process).

1. `SamplingParams.verify`: a bad `custom_params.rio_reasoning` is a ValueError -> HTTP 400.
2. `ModelRunner` (after its memory pool): our model builds its reasoning runtime before any CUDA
   graph is captured, and SGLang's sampling observer is ours (engine.py).
   `ForwardBatch.init_new`: new latent / switch requests get their slot reset, slots left by
   requests that never finished here are released (`requests.claim`), and the batch's sampling
   info names the rows that step after sampling.
3. `SchedulerOutputStreamer` + `TokenizerManager`: finished requests carry
   `meta_info["rio_reasoning"]`, a dict of statistics; OpenAI responses carry it in
   `metadata["rio_reasoning"]`, OpenAI streams in one last chunk before `[DONE]`.
4. The radix cache never keys KV written by latent steps: reasoning requests insert no more
   than what the tree already held when they finished.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import OrderedDict

from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpecError
from rio_sglang.runtime import requests as rq
from rio_sglang.runtime import validate

log = logging.getLogger(__name__)
STATS_KEY = "rio_reasoning"
_installed = False


def _patch_verify() -> None:
    from sglang.srt.sampling.sampling_params import SamplingParams

    original = SamplingParams.verify

    @functools.wraps(original)
    def verify(self, vocab_size):
        original(self, vocab_size)
        try:
            spec = rq.spec_of(self.custom_params)
            if spec is not None:
                spec.validate(vocab_size)
        except ReasoningSpecError as e:
            # str(e) starts with the field: "window: must lie in [1, 16777216], got -1"
            raise ValueError(f"custom_params.{SPEC_KEY}.{e}") from None
        if rq.uses_latent(spec) and _speculative_algorithm():
            raise ValueError(
                f"custom_params.{SPEC_KEY}.mode: {spec.mode!r} reasoning cannot run under "
                f"speculative decoding ({_speculative_algorithm()}): draft tokens would be "
                "verified against soft inputs; use mode 'explicit' or a server without "
                "--speculative-algorithm")

    SamplingParams.verify = verify


def _speculative_algorithm() -> str | None:
    from sglang.srt import runtime_context

    try:
        algo = runtime_context.get_spec().speculative_algorithm
    except (RuntimeError, LookupError, AttributeError, ValueError):  # no context: no refusal
        return None
    return str(algo) if algo else None


def _patch_model_runner() -> None:
    """Our model builds its reasoning runtime once the request-slot pool exists and before CUDA
    graphs are captured (the decode graph captures its embedding override), and the runner
    samples through our observer."""
    from sglang.srt.model_executor.model_runner import ModelRunner

    from rio_sglang.runtime.engine import ReasoningObserver

    original = ModelRunner._init_post_memory_pool_components

    @functools.wraps(original)
    def init_post_memory_pool(self):
        original(self)
        init = getattr(self.model, "init_reasoning", None)
        if init is None or getattr(self, "is_draft_worker", False):
            return
        init(self.req_to_token_pool.size + 1)
        if self.supports_sampling_observer():  # not under speculative decoding (refused there)
            self.sampling_observer = ReasoningObserver(self.model)

    ModelRunner._init_post_memory_pool_components = init_post_memory_pool


def _steps(req, decode: bool) -> bool:
    """Does the request take a reasoning step after this forward's sampling? Not while its
    prompt is still being prefilled in chunks (a middle chunk samples a placeholder)."""
    if decode:
        return True
    end = getattr(req, "extend_end", None)
    return end is None or end >= len(req.full_untruncated_fill_ids)


def _patch_init_new() -> None:
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    from rio_sglang.runtime.engine import ROWS_ATTR

    original = ForwardBatch.init_new.__func__

    @functools.wraps(original)
    def init_new(cls, batch, model_runner, **kwargs):
        fb = original(cls, batch, model_runner, **kwargs)
        runtime = getattr(model_runner.model, "reasoning", None)
        if runtime is None:
            return fb
        admission, release, index, slots = rq.Admission(), [], [], []
        decode = batch.forward_mode.is_decode()
        for i, req in enumerate(batch.reqs):
            spec = rq.spec_of_req(req)
            slot = int(req.kv.req_pool_idx)
            admit, stale = rq.claim(req.rid, slot, spec)
            release += stale
            if admit:
                admission.slots.append(slot)
                admission.specs.append(spec)
                admission.max_new_tokens.append(int(req.sampling_params.max_new_tokens or 1))
            if rq.uses_latent(spec) and _steps(req, decode):
                index.append(i)
                slots.append(slot)
        if release:
            runtime.release(release)
        if admission.slots:
            runtime.admit(admission.slots, admission.specs, admission.max_new_tokens)
        if index and fb.sampling_info is not None:
            setattr(fb.sampling_info, ROWS_ATTR, runtime.rows(index, slots))
        return fb

    ForwardBatch.init_new = classmethod(init_new)


def _patch_streamer() -> None:
    from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

    from rio_sglang.runtime import defaults, engine

    def build(self, reqs) -> dict[str, list]:
        values = []  # per request: [] until it finishes, then [its statistics]
        for req in reqs:
            spec = rq.spec_of_req(req)
            if spec is None or not req.finished():
                values.append([])
                continue
            stats = engine.finish(rq.forget(req.rid), len(req.output_ids))
            values.append([{**stats, **defaults.applied(req.sampling_params.custom_params)}])
        return {STATS_KEY: values}

    SchedulerOutputStreamer.has_additional_customized_info = True
    SchedulerOutputStreamer.build_additional_customized_info = build
    SchedulerOutputStreamer.is_request_level_customized_info_key = (
        lambda self, key: key == STATS_KEY)


# rid -> statistics of a finished request, for the OpenAI stream that ends it (read once).
# Bounded: a stream whose client went away never collects its entry.
FINAL_STATS: OrderedDict[str, dict] = OrderedDict()
FINAL_STATS_MAX = 4096


def _patch_meta_info() -> None:
    """The tokenizer manager accumulates customized info into lists; ours is one dict."""
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

    original = TokenizerManager._accumulate_request_meta_info

    def accumulate(meta_info, state, key, values):
        if key != STATS_KEY:
            return original(meta_info, state, key, values)
        if values:
            meta_info[key] = values[-1]
            if "id" in meta_info:
                FINAL_STATS[meta_info["id"]] = values[-1]
                while len(FINAL_STATS) > FINAL_STATS_MAX:
                    FINAL_STATS.popitem(last=False)

    TokenizerManager._accumulate_request_meta_info = staticmethod(accumulate)


def _patch_openai() -> None:
    """OpenAI responses carry the statistics in `metadata["rio_reasoning"]`; streams in a last
    chunk before `[DONE]`."""
    from sglang.srt.entrypoints.openai.serving_chat import OpenAIServingChat
    from sglang.srt.entrypoints.openai.serving_completions import OpenAIServingCompletion

    def wrap(cls, name):
        original = getattr(cls, name)

        @functools.wraps(original)
        def build(self, request, ret, *args, **kwargs):
            response = original(self, request, ret, *args, **kwargs)
            stats = [item.get("meta_info", {}).get(STATS_KEY) for item in ret]
            if any(s is not None for s in stats) and hasattr(response, "metadata"):
                meta = dict(response.metadata or {})
                meta[STATS_KEY] = stats[0] if len(stats) == 1 else stats
                response.metadata = meta
            return response

        setattr(cls, name, build)

    wrap(OpenAIServingChat, "_build_chat_response")
    wrap(OpenAIServingCompletion, "_build_completion_response")
    wrap_stream(OpenAIServingChat, "_generate_chat_stream", "chat.completion.chunk")
    wrap_stream(OpenAIServingCompletion, "_generate_completion_stream", "text_completion")


def wrap_stream(cls, name: str, obj: str) -> None:
    """Streams end with one more chunk before `[DONE]`: no choices, the statistics in
    `metadata["rio_reasoning"]` (one dict, or a list with n > 1), as non-streaming responses."""
    original = getattr(cls, name)

    @functools.wraps(original)
    async def stream(self, adapted_request, request, *args, **kwargs):
        async for chunk in original(self, adapted_request, request, *args, **kwargs):
            if chunk == "data: [DONE]\n\n":
                extra = _stats_chunk(adapted_request.rid, request, obj)
                if extra is not None:
                    yield extra
            yield chunk

    setattr(cls, name, stream)


def _stats_chunk(rid, request, obj: str) -> str | None:
    rids = rid if isinstance(rid, list) else [rid]
    stats = [FINAL_STATS.pop(r, None) for r in rids if r is not None]
    if not any(s is not None for s in stats):
        return None
    body = {"id": rids[0], "object": obj, "created": int(time.time()),
            "model": getattr(request, "model", None), "choices": [],
            "metadata": {STATS_KEY: stats[0] if len(stats) == 1 else stats}}
    return f"data: {json.dumps(body)}\n\n"


def _patch_radix_cache() -> None:
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

    original = UnifiedRadixCache.checkpoint_into_tree

    @functools.wraps(original)
    def checkpoint_into_tree(self, req, *, up_to: int, **kwargs):
        # Past the prompt, a latent request's KV (and its GDN state) belongs to soft inputs, not
        # to the token ids it would be keyed by: insert nothing beyond what the tree holds.
        past_prompt = up_to > len(req.origin_input_ids)
        if past_prompt and rq.uses_latent(rq.spec_of_req(req)):
            up_to = min(up_to, req.kv.cache_protected_len)
        return original(self, req, up_to=up_to, **kwargs)

    UnifiedRadixCache.checkpoint_into_tree = checkpoint_into_tree


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    _patch_verify()
    _patch_model_runner()
    _patch_init_new()
    _patch_streamer()
    _patch_meta_info()
    _patch_openai()
    _patch_radix_cache()
    validate.install()
    log.info("rio-sglang reasoning hooks installed")

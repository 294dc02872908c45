"""Hooks into SGLang 0.5.23 for per-request reasoning, installed by `runtime.plugin_entry` only
in the processes of a server that serves our model package.

Every hook goes through SGLang's plugin hook registry (`sglang/srt/plugins/hook_registry.py`),
which logs the plugin that applied it and keeps classmethods / staticmethods intact. `hooks()`
lists them (SGLang target, hook type, hook); tests/test_sglang_seams.py checks that each target
still exists with the parameters its hook takes, so an SGLang upgrade that moves one fails there
(tests/test_plugin_gate.py: none is applied for another model).

target (`sglang.srt...`), hook type: why (no official route unless said)
- `SamplingParams.verify`, after: a bad `custom_params.rio_reasoning` is a ValueError (HTTP
  400); latent modes are refused under speculative decoding.
- `ModelRunner._init_post_memory_pool_components`, after: our model builds its runtime once the
  slot pool exists, before CUDA graphs, and sets SGLang's sampling observer (its documented
  route; step.py).
- `ForwardBatch.init_new` (a classmethod), after: new latent / switch requests get their slot
  reset, stale slots are released (`context.py::ReasoningContext.claim`), the sampling info
  names stepping rows.
- `Scheduler.get_output_streamer_class`, after: returns `output.py::ReasoningOutputStreamer`
  (SGLang's route for customized output: a streamer subclass), which frees finished requests.
- `Scheduler._release_aborted_request`, after: an aborted request's context entries go.
- `TokenizerManager._accumulate_request_meta_info` (a staticmethod), around: our statistics
  are one dict, not a per-token list.
- `OpenAIServing{Chat,Completion}._build_*_response`, after: `metadata["rio_reasoning"]`;
  `..._generate_*_stream`, around: a refused first chunk raises (a 400, validate.py), one last
  chunk before `[DONE]`.
- `UnifiedRadixCache.checkpoint_into_tree`, around: the radix cache never keys KV written by
  latent steps.
- validate.py, around: `TokenizerManager._validate_one_request` and `._tokenize_one_request`,
  `GenerateReqInput.normalize_batch_and_arguments`, `http_server.serve_generate_request`
  (HTTP process only): a bad request is a 4xx, never a scheduler crash.

Not through the registry, and why (guard: tests/test_sglang_seams.py, named test):
- the OpenAI request models' "before" validators (`validate.py::_patch_openai_models`, HTTP
  process only): pydantic compiles them into each model's schema; they are re-wrapped in
  `__pydantic_decorators__` and the models rebuilt, no attribute to hook
  (`test_openai_model_validators_are_where_we_rewrap_them`).
- `SamplingBatchInfo.rio_reasoning_rows` (`step.py::ROWS_ATTR`), an attribute set by
  `init_new`: SGLang's sampling observer is handed only the batch's sampling info, so the
  stepping rows travel on it (`test_the_observer_is_handed_only_the_sampling_info`).
"""

from __future__ import annotations

import logging

from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpecError
from rio_sglang.runtime import validate
from rio_sglang.runtime.context import CONTEXT, Admission, spec_of, uses_latent

log = logging.getLogger(__name__)
_installed = False


def verify(result, self, vocab_size):
    """After `SamplingParams.verify`: our spec's errors name the field."""
    try:
        spec = spec_of(self.custom_params)
        if spec is not None:
            spec.validate(vocab_size)
    except ReasoningSpecError as e:
        # str(e) starts with the field: "window: must lie in [1, 16777216], got -1"
        raise ValueError(f"custom_params.{SPEC_KEY}.{e}") from None
    if uses_latent(spec) and _speculative_algorithm():
        raise ValueError(
            f"custom_params.{SPEC_KEY}.mode: {spec.mode!r} reasoning cannot run under "
            f"speculative decoding ({_speculative_algorithm()}): draft tokens would be "
            "verified against soft inputs; use mode 'explicit' or a server without "
            "--speculative-algorithm")


def _speculative_algorithm() -> str | None:
    from sglang.srt import runtime_context

    try:
        algo = runtime_context.get_spec().speculative_algorithm
    except (RuntimeError, LookupError, AttributeError, ValueError):  # no context: no refusal
        return None
    return str(algo) if algo else None


def after_memory_pool(result, self):
    """Our model builds its reasoning runtime once the request-slot pool exists and before CUDA
    graphs are captured (the decode graph captures its embedding override), and the runner
    samples through our observer."""
    from rio_sglang.runtime.step import ReasoningObserver

    init = getattr(self.model, "init_reasoning", None)
    if init is None or getattr(self, "is_draft_worker", False):
        return
    init(self.req_to_token_pool.size + 1)
    if self.supports_sampling_observer():  # not under speculative decoding (refused there)
        self.sampling_observer = ReasoningObserver(self.model)


def _steps(req, decode: bool) -> bool:
    """Does the request take a reasoning step after this forward's sampling? Not while its
    prompt is still being prefilled in chunks (a middle chunk samples a placeholder)."""
    if decode:
        return True
    end = getattr(req, "extend_end", None)
    return end is None or end >= len(req.full_untruncated_fill_ids)


def init_new(fb, cls, batch, model_runner, **kwargs):
    """After `ForwardBatch.init_new`: admit / release slots, name the stepping rows."""
    from rio_sglang.runtime.step import ROWS_ATTR

    runtime = getattr(model_runner.model, "reasoning", None)
    if runtime is None:
        return fb
    admission, release, index, slots = Admission(), [], [], []
    decode = batch.forward_mode.is_decode()
    for i, req in enumerate(batch.reqs):
        spec = CONTEXT.spec_of_req(req, keep=True)
        slot = int(req.kv.req_pool_idx)
        admit, stale = CONTEXT.claim(req.rid, slot, spec)
        release += stale
        if admit:
            admission.slots.append(slot)
            admission.specs.append(spec)
            admission.max_new_tokens.append(int(req.sampling_params.max_new_tokens or 1))
        if uses_latent(spec) and _steps(req, decode):
            index.append(i)
            slots.append(slot)
    if release:
        runtime.release(release)
    if admission.slots:
        runtime.admit(admission.slots, admission.specs, admission.max_new_tokens)
    if index and fb.sampling_info is not None:
        setattr(fb.sampling_info, ROWS_ATTR, runtime.rows(index, slots))
    return fb


def checkpoint_into_tree(original, self, req, *, up_to: int, **kwargs):
    """Past the prompt, a latent request's KV (and its GDN state) belongs to soft inputs, not
    to the token ids it would be keyed by: insert nothing beyond what the tree holds."""
    past_prompt = up_to > len(req.origin_input_ids)
    if past_prompt and uses_latent(CONTEXT.spec_of_req(req)):
        up_to = min(up_to, req.kv.cache_protected_len)
    return original(self, req, up_to=up_to, **kwargs)


def aborted(result, self, req):
    """After `Scheduler._release_aborted_request`: an aborted request's entries go."""
    CONTEXT.abort(req.rid)


def hooks() -> list[tuple[str, str, object]]:
    """(target, hook type, hook) for every hook we install (imports SGLang's output path)."""
    from rio_sglang.runtime import output

    chat = "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat"
    comp = "sglang.srt.entrypoints.openai.serving_completions.OpenAIServingCompletion"
    tm = "sglang.srt.managers.tokenizer_manager.TokenizerManager"
    return [
        ("sglang.srt.sampling.sampling_params.SamplingParams.verify", "after", verify),
        ("sglang.srt.model_executor.model_runner.ModelRunner._init_post_memory_pool_components",
         "after", after_memory_pool),
        ("sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new", "after", init_new),
        ("sglang.srt.managers.scheduler.Scheduler.get_output_streamer_class", "after",
         output.streamer_class),
        ("sglang.srt.managers.scheduler.Scheduler._release_aborted_request", "after", aborted),
        (f"{tm}._accumulate_request_meta_info", "around", output.accumulate_meta_info),
        (f"{chat}._build_chat_response", "after", output.response_metadata),
        (f"{comp}._build_completion_response", "after", output.response_metadata),
        (f"{chat}._generate_chat_stream", "around",
         output.stream_with_stats("chat.completion.chunk")),
        (f"{comp}._generate_completion_stream", "around",
         output.stream_with_stats("text_completion")),
        ("sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.checkpoint_into_tree",
         "around", checkpoint_into_tree),
        (f"{tm}._validate_one_request", "around", validate.validate_one_request),
        (f"{tm}._tokenize_one_request", "around", validate.tokenize_one_request),
        ("sglang.srt.managers.io_struct.GenerateReqInput.normalize_batch_and_arguments",
         "around", validate.normalize_batch),
        (f"{validate.HTTP_MODULE}.serve_generate_request", "around",
         validate.serve_generate_request),
    ]


def _register(entries) -> None:
    """Register with SGLang's hook registry. SGLang's plugin loader applies them after every
    plugin ran; called outside it (tests), they are applied at once."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType, _current_plugin_source

    for target, kind, hook in entries:
        HookRegistry.register(target, hook, HookType(kind))
    if _current_plugin_source.get() is None:
        HookRegistry.apply_hooks()


def _patch_verify() -> None:
    """The `SamplingParams.verify` hook alone (the request-side tests)."""
    _register([h for h in hooks() if h[2] is verify])


def install() -> int:
    """All our hooks, once per process (`runtime.plugin_entry`): how many this call registered
    (0 when they already were). The HTTP server's hooks go only into the HTTP process."""
    global _installed
    if _installed:
        return 0
    _installed = True
    http = validate.in_http_process()
    mine = [h for h in hooks() if http or not h[0].startswith(validate.HTTP_MODULE)]
    _register(mine)
    if http:
        validate._patch_openai_models()  # before the HTTP routes are built
    return len(mine)

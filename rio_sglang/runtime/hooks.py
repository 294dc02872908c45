"""Hooks into SGLang 0.5.23 for per-request reasoning, installed by `runtime.plugin_entry` only
in the processes of a server that runs SwiReasoning (`env.swireasoning_on`).

Every hook goes through SGLang's plugin hook registry (`sglang/srt/plugins/hook_registry.py`),
which logs the plugin that applied it and keeps classmethods / staticmethods intact; `install`
applies them at once and stops the process if one did not apply (the registry only logs that).
`hooks()` lists them (SGLang target, hook type, hook); tests/test_sglang_seams.py checks that each
target still exists with the parameters its hook takes, so an SGLang upgrade that moves one fails
there (tests/test_plugin_gate.py: none is applied for another model without RIO_SWIREASONING).

A request's path, scheduler side:
1. its spec was parsed and checked once in the tokenizer process (validate.py: a bad one is a
   400 naming the field);
2. `ForwardBatch.init_new`, after: the first batch that holds it parses its spec once more, into
   its `record.py::Record` (on SGLang's `Req`); a new latent / switch record gets its slot reset
   (`sampler.py::ReasoningRuntime.claim`), and the sampling info names the stepping rows;
3. the model's forward and the sampler (`attach.py`, `sampler.py`) step it on the device;
4. `Scheduler.get_output_streamer_class`, after: `output.py::ReasoningOutputStreamer` reads a
   finished record's statistics once and frees its slot; `Scheduler._release_aborted_request`,
   after: an aborted record's slot is released.

target (`sglang.srt...`), hook type: why (no official route unless said)
- `ModelRunner._init_post_memory_pool_components`, after: the runtime is attached to the model
  once the slot pool exists, before CUDA graphs (`attach.py`), and the runner samples through
  SGLang's sampling observer (its documented route; sampler.py).
- `ForwardBatch.init_new` (a classmethod), after: step 2.
- `Scheduler.get_output_streamer_class`, after: step 4 (SGLang's route for customized output:
  a streamer subclass).
- `Scheduler._release_aborted_request`, after: step 4.
- `Req.reset_for_retract`, after (SGLang's decode retraction and priority preemption): a latent
  / switch record keeps its resume point (journal.py) and its soft inputs go to SGLang's own
  per-position embedding overrides (`Req.positional_embed_overrides`) for its next prefill.
- `ScheduleBatch._get_decode_retraction_order` (a staticmethod), around: explicit requests are
  retracted before latent / switch ones.
- `SchedulerBatchResultProcessor.snapshot_auxiliary_output_starts` (a classmethod), after: the
  step's host copies are done and its tokens not committed; a spent answer budget sets the
  request's `to_finish` (ends it with this token whatever `ignore_eos` says).
- `TokenizerManager.update_request_meta_info`, around (its public route): our statistics are
  one dict, not a per-token list.
- `OpenAIServing{Chat,Completion}._build_*_response`, after: `metadata["rio_reasoning"]`;
  `..._generate_*_stream`, around: a refused first chunk raises (a 400, validate.py), one last
  chunk before `[DONE]` with the statistics the stream's own outputs carried.
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
- `SamplingBatchInfo.rio_reasoning_rows` (`sampler.py::ROWS_ATTR`), an attribute set by
  `init_new`: SGLang's sampling observer is handed only the batch's sampling info, so the
  stepping rows travel on it (`test_the_observer_is_handed_only_the_sampling_info`).
- `Req.rio_reasoning` (`record.py::RECORD_ATTR`): the record lives and dies with its request.
- SGLang's own request fields we set: `Req.positional_embed_overrides` (a retracted request's
  soft inputs, absolute positions) and `Req.to_finish` (a spent answer budget), which its batch
  and finish check honour (`test_the_request_fields_we_set_do_what_we_rely_on`).
"""

from __future__ import annotations

import logging

from rio_sglang.runtime import validate
from rio_sglang.runtime.record import admit, record_of

log = logging.getLogger(__name__)
_installed = False


class HooksNotApplied(SystemExit):
    """Stops the process: SGLang would run on without a hook the reasoning path needs."""


def after_memory_pool(result, self):
    """The runtime is attached once the request-slot pool exists and before CUDA graphs are
    captured (the decode graph captures the embedding override); the runner samples through our
    observer. Not for a draft worker, nor where the runner has no observer (speculative
    decoding: latent requests are refused there), nor for a vocabulary without think tags."""
    from sglang.srt.runtime_context import get_parallel

    from rio_sglang.runtime.attach import attach, served_tokens
    from rio_sglang.runtime.sampler import RUNTIME_ATTR, ReasoningObserver

    if getattr(self, "is_draft_worker", False) or not self.supports_sampling_observer():
        return
    args = self.server_args
    tokens = served_tokens(args.tokenizer_path or args.model_path,
                           getattr(self.model_config.hf_config, "model_type", ""))
    if tokens is None:
        return
    parallel = get_parallel()
    runtime = attach(self.model, self.req_to_token_pool.size + 1, tokens, parallel.pp_size,
                     parallel.tp_size)
    setattr(self, RUNTIME_ATTR, runtime)
    self.sampling_observer = ReasoningObserver(runtime)


def _steps(req, decode: bool) -> bool:
    """Does the request take a reasoning step after this forward's sampling? Not while its
    prompt is still being prefilled in chunks (a middle chunk samples a placeholder)."""
    if decode:
        return True
    end = getattr(req, "extend_end", None)
    return end is None or end >= len(req.full_untruncated_fill_ids)


def init_new(fb, cls, batch, model_runner, **kwargs):
    """After `ForwardBatch.init_new`: records, slots admitted / released / resumed, the
    stepping rows."""
    from rio_sglang.runtime.sampler import ROWS_ATTR, RUNTIME_ATTR

    runtime = getattr(model_runner, RUNTIME_ATTR, None)
    records = [admit(req, runtime) for req in batch.reqs]
    if runtime is None:
        return fb
    slots, specs, max_new, release, resumes, index, rows, stepping = [], [], [], [], [], [], [], []
    decode = batch.forward_mode.is_decode()
    for i, (req, record) in enumerate(zip(batch.reqs, records)):
        slot = int(req.kv.req_pool_idx)
        resume = record.retracted  # set for latent / switch records only
        reset, stale = runtime.claim(record, slot)
        release += stale
        if reset:
            slots.append(slot)
            specs.append(record.spec)
            max_new.append(int(req.sampling_params.max_new_tokens or 1))
        if resume:
            resumes.append((record, slot))
        if record.latent and _steps(req, decode):
            index.append(i)
            rows.append(slot)
            stepping.append(record)
    if release:
        runtime.release(release)
    if slots:
        runtime.reset(slots, specs, max_new)
    for record, slot in resumes:
        runtime.resume(record, slot)
    runtime.journal.drain()
    if index and fb.sampling_info is not None:
        setattr(fb.sampling_info, ROWS_ATTR, runtime.rows(index, rows, stepping))
    return fb


def retracted(result, self):
    """After `Req.reset_for_retract` (SGLang's decode retraction and priority preemption): a
    latent / switch record keeps its resume point (`ReasoningRuntime.retract`), and its prefill
    feeds each output position the soft input it had, through SGLang's own positional embedding
    overrides (`Req.positional_embed_overrides`: absolute positions; SGLang's batch places those
    of each prefill chunk, `ScheduleBatch.replace_embeds`)."""
    record = record_of(self)
    if record is None or not record.latent or record.runtime is None:
        return
    soft = record.runtime.retract(record, len(self.output_ids))
    if not soft:
        return
    from sglang.srt.managers.embed_types import PositionalEmbeds

    prompt = len(self.origin_input_ids)
    theirs = self.positional_embed_overrides  # positions in the prompt, if the client sent any
    positions = [prompt + k for k in sorted(soft)]
    rows = [soft[k] for k in sorted(soft)]
    if theirs is not None:
        kept = [i for i, p in enumerate(theirs.positions) if p < prompt]
        positions = [theirs.positions[i] for i in kept] + positions
        rows = [theirs.embeds[i].to(rows[0].dtype) for i in kept] + rows
    self.positional_embed_overrides = PositionalEmbeds(embeds=rows, positions=positions)


def retraction_order(original, reqs):
    """Around `ScheduleBatch._get_decode_retraction_order` (most-preferred to keep first; the
    tail is retracted first): explicit requests go before latent / switch ones, each group in
    SGLang's order. SGLang's "priority" retraction policy is left as it orders."""
    from sglang.srt.runtime_context import get_schedule

    order = original(reqs)
    if get_schedule().retraction_policy == "priority":
        return order
    latent = [i for i in order if _latent(reqs[i])]
    return latent + [i for i in order if not _latent(reqs[i])]


def _latent(req) -> bool:
    record = record_of(req)
    return record is not None and record.latent


def answer_budgets(starts, cls, batch, result):
    """After `SchedulerBatchResultProcessor.snapshot_auxiliary_output_starts`: the step's host
    copies are done and its tokens not yet committed; a request whose answer budget was spent
    ends with this token (`sampler.py::HostRelay.finish_spent`)."""
    from rio_sglang.runtime.sampler import HostRelay

    host = getattr(result, "auxiliary_host_output", None)
    for part in getattr(host, "outputs", (host,)):
        if isinstance(part, HostRelay):
            part.finish_spent(batch)
    return starts


def checkpoint_into_tree(original, self, req, *, up_to: int, **kwargs):
    """Past the prompt, a latent request's KV (and its GDN state) belongs to soft inputs, not
    to the token ids it would be keyed by: insert nothing beyond what the tree holds."""
    record = record_of(req)
    if up_to > len(req.origin_input_ids) and record is not None and record.latent:
        up_to = min(up_to, req.kv.cache_protected_len)
    return original(self, req, up_to=up_to, **kwargs)


def aborted(result, self, req):
    """After `Scheduler._release_aborted_request`: a slot the request holds is released."""
    record = record_of(req)
    if record is not None:
        record.abort()


def hooks() -> list[tuple[str, str, object]]:
    """(target, hook type, hook) for every hook we install (imports SGLang's output path)."""
    from rio_sglang.runtime import output

    chat = "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat"
    comp = "sglang.srt.entrypoints.openai.serving_completions.OpenAIServingCompletion"
    tm = "sglang.srt.managers.tokenizer_manager.TokenizerManager"
    processor = ("sglang.srt.managers.scheduler_components.batch_result_processor."
                 "SchedulerBatchResultProcessor")
    return [
        ("sglang.srt.model_executor.model_runner.ModelRunner._init_post_memory_pool_components",
         "after", after_memory_pool),
        ("sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new", "after", init_new),
        ("sglang.srt.managers.scheduler.Scheduler.get_output_streamer_class", "after",
         output.streamer_class),
        ("sglang.srt.managers.scheduler.Scheduler._release_aborted_request", "after", aborted),
        ("sglang.srt.managers.schedule_batch.Req.reset_for_retract", "after", retracted),
        ("sglang.srt.managers.schedule_batch.ScheduleBatch._get_decode_retraction_order",
         "around", retraction_order),
        (f"{processor}.snapshot_auxiliary_output_starts", "after", answer_budgets),
        (f"{tm}.update_request_meta_info", "around", output.update_meta_info),
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
    """Register with SGLang's hook registry and apply at once (the registry skips targets it
    already patched, so SGLang's own apply after all plugins changes nothing); a target that
    did not apply stops the process, naming it."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    for target, kind, hook in entries:
        HookRegistry.register(target, hook, HookType(kind))
    HookRegistry.apply_hooks()
    missing = [target for target, _, _ in entries if target not in HookRegistry._patched]
    if missing:
        raise HooksNotApplied(
            f"rio-sglang: SwiReasoning hooks did not apply to {missing} (see SGLang's "
            "'Failed to apply hooks' log above): this SGLang differs from 0.5.23")


def install() -> int:
    """All our hooks, once per process (`runtime.plugin_entry`): how many this call registered
    (0 when they already were). The HTTP server's hooks go only into the HTTP process."""
    global _installed
    if _installed:
        return 0
    _installed = True
    http = validate.in_http_process()
    mine = [h for h in hooks() if http or not h[0].startswith(validate.HTTP_MODULE)]
    if http:  # before applying imports the HTTP server, which builds its routes' schemas
        validate._patch_openai_models()
    _register(mine)
    return len(mine)

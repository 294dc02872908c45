"""Request checks at the API boundary (hooks.py registers them): nothing a client sends may fail
inside the scheduler, where one exception takes the whole server down.

1. `TokenizerManager._validate_one_request` (every /generate, OpenAI and multimodal request,
   single or batched, once its prompt is tokenized; a client's ids also before a multimodal
   processor reads them, in `_tokenize_one_request`): prompt ids and `stop_token_ids` are integers
   in [0, V), at most V top logprobs, `top_k` and `min_new_tokens` fit the scheduler's int32
   tensors, `logit_bias` values are finite. SGLang 0.5.23 checks none of these (each one killed
   its scheduler). The request's reasoning spec (its own, else the server default) is parsed
   here once (`check_reasoning`): its fields, its step counts against the context length, and
   latent modes against what the server can run (speculative decoding, a vocabulary without
   think tags).
   `GenerateReqInput.normalize_batch_and_arguments`: at most 128 samples per prompt (`n`), and
   a batch whose lists disagree in length, or one request with a list of rids, is a 400 (the
   first stalled the server, the others were 500s).
2. OpenAI request models: a "before" validator that trips over a malformed body (a JSON array,
   a string `response_format`) raises a ValueError, which FastAPI answers 400, not 500.
3. Streams: a streaming /generate request is started before its HTTP status goes out
   (`http_server.serve_generate_request`), so a refused one (by validation, or by an abort as a
   bad request in its first output, such as a grammar that does not compile) is a 400 like
   SGLang's OpenAI streams; OpenAI streams whose first chunk is such an abort raise, so that
   SGLang's own kick-start answers 400 too. Not a 200 stream carrying the error.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import sys

from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpecError, _is_int, _is_number, show
from rio_sglang.runtime import defaults

HTTP_MODULE = "sglang.srt.entrypoints.http_server"
MAX_SAMPLES = 128  # `n`, as OpenAI's API
TOP_K_ALL = 1 << 30  # SGLang's "whole vocabulary" top_k; the sampler holds top_k in int32


def check_input_ids(input_ids, vocab_size: int) -> None:
    """input_ids: [T] the prompt's token ids (None: no ids). ValueError naming `input_ids` and
    the first id that is not an integer in [0, vocab_size)."""
    if input_ids is None:
        return
    if not isinstance(input_ids, list):
        input_ids = list(input_ids)  # an array or tensor from a multimodal processor
    # Fast path first: a well-formed prompt costs one pass in C.
    if all(type(t) is int for t in input_ids) and (
            not input_ids or (min(input_ids) >= 0 and max(input_ids) < vocab_size)):
        return
    for i, token in enumerate(input_ids):
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab_size:
            raise ValueError(f"input_ids[{i}]: {show(token)} is not a token id in "
                             f"[0, {vocab_size})")


def check_top_logprobs(top_logprobs_num, vocab_size: int) -> None:
    """More top logprobs than the vocabulary fails `topk` inside the sampler."""
    if top_logprobs_num is None:
        return
    if not isinstance(top_logprobs_num, int) or not 0 <= top_logprobs_num <= vocab_size:
        raise ValueError(f"top_logprobs_num (OpenAI: top_logprobs / logprobs): "
                         f"{show(top_logprobs_num)} is not in [0, {vocab_size}]")


def check_sampling(sampling_params, vocab_size: int, context_len: int) -> None:
    """What SGLang's `SamplingParams.verify` leaves to the scheduler's tensors."""
    if not isinstance(sampling_params, dict):
        return  # SGLang refuses it by name
    top_k, min_new = sampling_params.get("top_k"), sampling_params.get("min_new_tokens")
    if _is_number(top_k) and top_k > TOP_K_ALL:
        raise ValueError(f"top_k: {show(top_k)} is above {TOP_K_ALL} (-1: the whole vocabulary)")
    if _is_number(min_new) and min_new > context_len:
        raise ValueError(f"min_new_tokens: {show(min_new)} is above the context length "
                         f"{context_len}")
    stop_ids = sampling_params.get("stop_token_ids")
    for token in stop_ids if isinstance(stop_ids, list) else ():
        if not _is_int(token) or not 0 <= token < vocab_size:
            raise ValueError(f"stop_token_ids: {show(token)} is not a token id in "
                             f"[0, {vocab_size})")
    bias = sampling_params.get("logit_bias")
    for value in bias.values() if isinstance(bias, dict) else ():
        if not _is_number(value):
            raise ValueError(f"logit_bias: {show(value)} is not a finite number")


def check_samples_per_prompt(sampling_params) -> None:
    """`n` copies of a request are made on the HTTP server's event loop, before anything else:
    a huge `n` stalls every request (10^6 took minutes)."""
    for params in sampling_params if isinstance(sampling_params, list) else [sampling_params]:
        n = params.get("n") if isinstance(params, dict) else None
        if _is_number(n) and n > MAX_SAMPLES:
            raise ValueError(f"n: {show(n)} is above {MAX_SAMPLES} samples per prompt")


class SpecRefused(ValueError):
    """A request's reasoning spec refused (HTTP 400); `field` names the spec field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"custom_params.{SPEC_KEY}.{field}: {message}")
        self.field = field


def check_reasoning(sampling_params, vocab_size: int, context_len: int,
                    speculative: str | None = None, no_latent: str | None = None) -> None:
    """The request's spec (its own or the server default), parsed once: SpecRefused naming the
    field for a bad one, or for a latent / switch one where it cannot run (`speculative`: the
    server's speculative algorithm; `no_latent`: why this vocabulary cannot)."""
    custom = sampling_params.get("custom_params") if isinstance(sampling_params, dict) else None
    try:
        spec, _ = defaults.effective(custom)
        if spec is not None:
            spec.validate(vocab_size, context_len)
    except ReasoningSpecError as e:
        raise SpecRefused(e.field, e.message) from None
    if spec is None or spec.mode == "explicit":
        return
    if speculative:
        raise SpecRefused(
            "mode", f"{spec.mode!r} reasoning cannot run under speculative decoding "
            f"({speculative}): draft tokens would be verified against soft inputs; use mode "
            "'explicit' or a server without --speculative-algorithm")
    if no_latent:
        raise SpecRefused("mode", f"{spec.mode!r} reasoning cannot run on this model: "
                          f"{no_latent}; use mode 'explicit'")


def latent_refusal(tokenizer) -> str | None:
    """Why the served tokenizer cannot run latent reasoning, or None (no tokenizer: None).
    Two vocabulary lookups where the think tags are there."""
    from rio_sglang.reasoning.tokens import missing_think_tag

    return None if tokenizer is None else missing_think_tag(tokenizer)


def validate_one_request(original, self, obj, input_ids):
    """Around `TokenizerManager._validate_one_request`: ours before and after SGLang's."""
    vocab_size = self.model_config.vocab_size
    check_input_ids(input_ids, vocab_size)
    check_top_logprobs(getattr(obj, "top_logprobs_num", None), vocab_size)
    original(self, obj, input_ids)
    check_sampling(obj.sampling_params, vocab_size, self.context_len)
    try:
        check_reasoning(obj.sampling_params, vocab_size, self.context_len,
                        self.server_args.speculative_algorithm, latent_refusal(self.tokenizer))
    except SpecRefused as e:
        if getattr(self, "enable_metrics", False):
            from rio_sglang.runtime import metrics

            metrics.observe_refused(e.field)
        raise


async def tokenize_one_request(original, self, obj):
    """Around `TokenizerManager._tokenize_one_request`: a client's ids before a multimodal
    processor reads them."""
    if isinstance(getattr(obj, "input_ids", None), list):
        check_input_ids(obj.input_ids, self.model_config.vocab_size)
    return await original(self, obj)


def normalize_batch(original, self):
    """Around `GenerateReqInput.normalize_batch_and_arguments`: `n` first, then the shape."""
    check_samples_per_prompt(self.sampling_params)
    original(self)
    if self.is_single:
        if isinstance(self.rid, (list, dict)):  # the request table is keyed by it
            raise ValueError("rid: a single request takes one id, not a list")
        return
    try:  # the tokenizer manager splits the batch so, after this
        for i in range(len(self.rid)):
            self[i]
    except (IndexError, TypeError, KeyError) as e:
        raise ValueError(f"batch fields disagree in length or type: {e}") from None


def _patch_openai_models() -> None:
    """Before the HTTP routes are built (they keep the schemas they were built with)."""
    from pydantic import BaseModel
    from sglang.srt.entrypoints.openai import protocol

    models = [m for m in vars(protocol).values() if isinstance(m, type)
              and issubclass(m, BaseModel) and m.__module__ == protocol.__name__]
    for model in models:
        for decorator in model.__pydantic_decorators__.model_validators.values():
            if decorator.info.mode == "before" and not hasattr(decorator.func, "_rio_checked"):
                decorator.func = _as_value_error(decorator.func)
    for model in models:  # definition order: nested models are rebuilt before their parents
        model.model_rebuild(force=True)


def _as_value_error(func):
    @functools.wraps(func)
    def before(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (AttributeError, TypeError, KeyError, IndexError) as e:
            raise ValueError(f"malformed request: {e}") from None

    before._rio_checked = True
    return before


async def serve_generate_request(original, obj, request):
    """Around `http_server.serve_generate_request`: a stream is started before its status."""
    from fastapi.responses import StreamingResponse
    from sglang.srt.entrypoints import http_server

    if not obj.stream:
        return await original(obj, request)
    manager = http_server._global_state.tokenizer_manager
    outputs = manager.generate_request(obj, request)
    try:  # validation runs before the first output: refuse before HTTP 200 is sent
        first = await outputs.__anext__()
    except ValueError as e:
        return http_server._create_error_response(e)
    refused = _refusal(first)
    if refused is not None:  # refused after admission (a grammar that does not compile)
        return http_server._create_error_response(ValueError(refused))

    async def stream():
        try:
            async for out in _prepend(first, outputs):
                yield b"data: " + http_server.dumps_json(out) + b"\n\n"
        except ValueError as e:  # as SGLang's own stream: an error event, then [DONE]
            if not await request.is_disconnected():
                error = {"error": {"message": str(e), "type": "invalid_request_error",
                                   "code": getattr(e, "status_code", 400)}}
                yield b"data: " + http_server.dumps_json(error) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             background=manager.create_abort_task(obj))


async def refuse_first(chunks):
    """An OpenAI stream (`output.py::stream_with_stats` wraps it) whose first chunk is a
    bad-request error raises instead, so that SGLang's kick-start
    (`_handle_streaming_request`) answers 400 before HTTP 200 goes out."""
    async for chunk in chunks:
        refused = _chunk_refusal(chunk)
        if refused is not None:
            raise ValueError(refused)
        yield chunk
        break
    async for chunk in chunks:
        yield chunk


def _chunk_refusal(chunk) -> str | None:
    """The message of an OpenAI stream chunk `data: {"error": {..., "code": 400}}`, or None."""
    if not isinstance(chunk, str) or not chunk.startswith('data: {"error"'):
        return None
    try:
        error = json.loads(chunk[len("data: "):])["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(error.get("message")) if error.get("code") == 400 else None


def _refusal(out) -> str | None:
    """The message of a first output that aborts its request as a bad request (HTTP 400)."""
    reason = out.get("meta_info", {}).get("finish_reason") if isinstance(out, dict) else None
    if isinstance(reason, dict) and reason.get("type") == "abort" and \
            reason.get("status_code") == 400:
        return str(reason.get("message"))
    return None


async def _prepend(first, rest):
    yield first
    async for item in rest:
        yield item


def in_http_process() -> bool:
    """The HTTP server runs in the launching process; its workers need not import it (~1 s)."""
    return multiprocessing.parent_process() is None or HTTP_MODULE in sys.modules

"""Reasoning statistics on the way out (hooks.py installs these in our server's processes).

The scheduler's output streamer (`ReasoningOutputStreamer`, SGLang's subclass route) attaches
a finished request's statistics as customized info; the tokenizer manager keeps them as one
dict in `meta_info["rio_reasoning"]`; OpenAI responses carry them in `metadata`, OpenAI
streams in one last chunk before `[DONE]`.
"""

from __future__ import annotations

import json
import time

from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

from rio_sglang.runtime import defaults, step, validate
from rio_sglang.runtime.context import CONTEXT

STATS_KEY = "rio_reasoning"
DONE = "data: [DONE]\n\n"  # SGLang's OpenAI stream terminator


class ReasoningOutputStreamer(SchedulerOutputStreamer):
    """Finished reasoning requests carry their statistics (read from the device once) and free
    their slot and context entries. SGLang refuses customized info on its Rust egress: such a
    server fails at start."""

    has_additional_customized_info = True

    def build_additional_customized_info(self, reqs) -> dict[str, list]:
        values = []  # per request: [] until it finishes, then [its statistics]
        for req in reqs:
            if not req.finished():
                values.append([])
                continue
            spec = CONTEXT.spec_of_req(req)
            tracked = CONTEXT.forget(req.rid)
            if spec is None:
                values.append([])
                continue
            stats = step.finish(tracked, len(req.output_ids))
            # which spec applied, and whether it came from the server default (issue 18)
            values.append([{**stats, **defaults.applied(req.sampling_params.custom_params)}])
        return {STATS_KEY: values}

    def is_request_level_customized_info_key(self, key: str) -> bool:
        return key == STATS_KEY


def streamer_class(result, self):
    """After `Scheduler.get_output_streamer_class`: ours."""
    return ReasoningOutputStreamer


def accumulate_meta_info(original, meta_info, state, key, values):
    """Around `TokenizerManager._accumulate_request_meta_info`, which accumulates customized
    info into lists: ours is one dict, also kept for the OpenAI stream that ends the request."""
    if key != STATS_KEY:
        return original(meta_info, state, key, values)
    if values:
        meta_info[key] = values[-1]
        if "id" in meta_info:
            CONTEXT.keep_final(meta_info["id"], values[-1])


def response_metadata(response, self, request, ret, *args, **kwargs):
    """After `_build_chat_response` / `_build_completion_response`: the statistics in
    `metadata["rio_reasoning"]` (one dict, or a list with n > 1)."""
    stats = [item.get("meta_info", {}).get(STATS_KEY) for item in ret]
    if any(s is not None for s in stats) and hasattr(response, "metadata"):
        meta = dict(response.metadata or {})
        meta[STATS_KEY] = stats[0] if len(stats) == 1 else stats
        response.metadata = meta
    return response


def stream_with_stats(obj: str):
    """Around `_generate_chat_stream` / `_generate_completion_stream` (chunk object `obj`):
    a refused first chunk raises (`validate.py::refuse_first`); one more chunk before
    `[DONE]`, no choices, the statistics as non-streaming responses."""

    async def stream(original, self, adapted_request, request, *args, **kwargs):
        chunks = original(self, adapted_request, request, *args, **kwargs)
        async for chunk in validate.refuse_first(chunks):
            if chunk == DONE:
                extra = _stats_chunk(adapted_request.rid, request, obj)
                if extra is not None:
                    yield extra
            yield chunk

    return stream


def _stats_chunk(rid, request, obj: str) -> str | None:
    rids = rid if isinstance(rid, list) else [rid]
    stats = [CONTEXT.take_final(r) for r in rids if r is not None]
    if not any(s is not None for s in stats):
        return None
    body = {"id": rids[0], "object": obj, "created": int(time.time()),
            "model": getattr(request, "model", None), "choices": [],
            "metadata": {STATS_KEY: stats[0] if len(stats) == 1 else stats}}
    return f"data: {json.dumps(body)}\n\n"

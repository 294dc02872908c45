"""Reasoning statistics on the way out (hooks.py installs these in our server's processes).

The scheduler's output streamer (`ReasoningOutputStreamer`, SGLang's subclass route) attaches
a finished request's statistics (its `record.py::Record`) as customized info; the tokenizer
manager keeps them as one dict in `meta_info["rio_reasoning"]` of the request's last output;
OpenAI responses carry them in `metadata`, OpenAI streams in one last chunk before `[DONE]`,
taken from the outputs the stream itself read (no registry between requests).
"""

from __future__ import annotations

import copy
import json
import logging
import time

from sglang.srt.managers.schedule_batch import BaseFinishReason
from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

from rio_sglang import env
from rio_sglang.runtime import validate
from rio_sglang.runtime.record import admit

STATS_KEY = "rio_reasoning"
# One debug line per finished reasoning request: RIO_REASONING_LOG=1 turns it on.
finished_log = logging.getLogger("rio_sglang.reasoning.requests")
if env.reasoning_request_log():
    finished_log.setLevel(logging.DEBUG)
DONE = "data: [DONE]\n\n"  # SGLang's OpenAI stream terminator


class ReasoningOutputStreamer(SchedulerOutputStreamer):
    """Finished reasoning requests carry their statistics (read from the device once) and free
    their slot. SGLang refuses customized info on its Rust egress: such a server fails at
    start."""

    has_additional_customized_info = True

    def build_additional_customized_info(self, reqs) -> dict[str, list]:
        values = []  # per request: [] until it finishes, then [its statistics]
        for req in reqs:
            if not req.finished():
                values.append([])
                continue
            record = admit(req, None)  # built by its first batch
            values.append([] if record.spec is None
                          else [record.finish(len(req.output_ids), req.retraction_count)])
        return {STATS_KEY: values}

    def is_request_level_customized_info_key(self, key: str) -> bool:
        return key == STATS_KEY


class AnswerBudgetSpent(BaseFinishReason):
    """A latent / switch request ended because the answer budget after its injected termination
    ran out (`sampler.py::HostRelay.finish_spent`), `ignore_eos` or not: a stop, with the token
    that ended it (the EOS) and the reason named."""

    def __init__(self, matched: int | None):
        super().__init__()
        self.matched = matched

    def to_json(self):
        return {"type": "stop", "matched": self.matched, "reason": "answer_budget"}


def streamer_class(result, self):
    """After `Scheduler.get_output_streamer_class`: ours."""
    return ReasoningOutputStreamer


def update_meta_info(original, self, meta_info, state, customized_info, index, finish_reason):
    """Around `TokenizerManager.update_request_meta_info`, which accumulates customized info
    into lists: ours is one dict, in the output that finishes the request."""
    ours = customized_info.get(STATS_KEY)
    rest = {k: v for k, v in customized_info.items() if k != STATS_KEY}
    if rest:
        original(self, meta_info, state, rest, index, finish_reason)
    if ours is None or not ours[index]:
        return
    stats = meta_info[STATS_KEY] = ours[index][-1]
    if getattr(self, "enable_metrics", False):  # --enable-metrics: SGLang's /metrics
        from rio_sglang.runtime import metrics

        metrics.observe_finished(stats, finish_reason)
    if finished_log.isEnabledFor(logging.DEBUG):
        finished_log.debug(
            "rio-sglang reasoning request %s finished (%s): mode %s, latent %d, explicit %d, "
            "switches %d, convergence %s, termination %s, forced </think> %s",
            meta_info.get("id"), (finish_reason or {}).get("type"),
            (stats.get("spec") or {}).get("mode"), stats["latent_steps"],
            stats["explicit_steps"], stats["switches"], stats["injected_convergence"],
            stats["injected_termination"], stats["forced_think_end"])


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
    `[DONE]`, no choices, the statistics as non-streaming responses. The stream runs on a view
    of its serving object whose tokenizer manager hands each output on and keeps the stats."""

    async def stream(original, self, adapted_request, request, *args, **kwargs):
        view = copy.copy(self)
        view.tokenizer_manager = tap = StatsTap(self.tokenizer_manager)
        chunks = original(view, adapted_request, request, *args, **kwargs)
        async for chunk in validate.refuse_first(chunks):
            if chunk == DONE and tap.stats:
                yield _stats_chunk(adapted_request.rid, request, obj, tap.stats)
            yield chunk

    return stream


class StatsTap:
    """A tokenizer manager for one stream: its outputs pass through, the statistics of each
    choice (`index`) are kept."""

    def __init__(self, manager):
        self._manager = manager
        self.stats: dict[int, dict] = {}

    def __getattr__(self, name):
        return getattr(self._manager, name)

    async def generate_request(self, *args, **kwargs):
        async for out in self._manager.generate_request(*args, **kwargs):
            stats = out.get("meta_info", {}).get(STATS_KEY) if isinstance(out, dict) else None
            if stats is not None:
                self.stats[out.get("index", 0)] = stats
            yield out


def _stats_chunk(rid, request, obj: str, by_index: dict[int, dict]) -> str:
    rids = rid if isinstance(rid, list) else [rid]
    stats = [by_index[i] for i in sorted(by_index)]
    body = {"id": rids[0], "object": obj, "created": int(time.time()),
            "model": getattr(request, "model", None), "choices": [],
            "metadata": {STATS_KEY: stats[0] if len(stats) == 1 else stats}}
    return f"data: {json.dumps(body)}\n\n"

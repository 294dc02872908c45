"""Where reasoning specs and statistics travel on the wire: the one module that knows the keys.

Request: `{"custom_params": {"rio_reasoning": spec}}`, inside `sampling_params` on /generate and
at the top of an OpenAI body. Response: `meta_info["rio_reasoning"]` on /generate and
`metadata["rio_reasoning"]` in OpenAI responses; an OpenAI stream carries it in its last chunk
before `[DONE]` (no choices) (rio_sglang/runtime/output.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec, ReasoningStats

STATS_KEY = SPEC_KEY
CUSTOM_PARAMS = "custom_params"
_STATS_FIELDS = {f.name for f in dataclasses.fields(ReasoningStats)}


def custom_params(spec: ReasoningSpec | None) -> dict[str, Any]:
    """`custom_params` content for one request; empty when no spec is asked for."""
    return {} if spec is None else {SPEC_KEY: spec.to_json()}


def generate_sampling_params(spec: ReasoningSpec | None) -> dict[str, Any]:
    """Keys to merge into a /generate request's `sampling_params`."""
    return {} if spec is None else {CUSTOM_PARAMS: custom_params(spec)}


def openai_body(spec: ReasoningSpec | None) -> dict[str, Any]:
    """Keys to merge into an OpenAI chat / completion body (the openai client's `extra_body`)."""
    return {} if spec is None else {CUSTOM_PARAMS: custom_params(spec)}


def spec_from_custom_params(params: dict[str, Any] | None) -> ReasoningSpec | None:
    """The spec a request carries (None when it carries none); what a server reads back."""
    if not params or SPEC_KEY not in params:
        return None
    return ReasoningSpec.from_json(params[SPEC_KEY])


def stats_from_meta_info(meta_info: dict[str, Any] | None) -> ReasoningStats | None:
    """Statistics of one /generate answer, None when the server sent none."""
    return _parse_stats((meta_info or {}).get(STATS_KEY))


def stats_from_openai(response: dict[str, Any]) -> ReasoningStats | None:
    """Statistics of one OpenAI response or stream chunk (as a dict), None when absent."""
    return _parse_stats((response.get("metadata") or {}).get(STATS_KEY))


def _parse_stats(data: Any) -> ReasoningStats | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TypeError(f"{STATS_KEY}: expected a JSON object, got {type(data).__name__}")
    # Keys this client does not know (a newer server) are left out, not fatal.
    return ReasoningStats(**{k: v for k, v in data.items() if k in _STATS_FIELDS})

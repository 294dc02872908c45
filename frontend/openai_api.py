"""Reasoning per request from the `openai` client: the spec goes in `extra_body`, and the
reasoning text and SwiReasoning statistics come back beside the answer. Example:

    from openai import OpenAI
    import rio_frontend as rio

    client = OpenAI(base_url="http://127.0.0.1:30000/v1", api_key="none")
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "What is 12 + 30?"}],
        max_tokens=512, extra_body=rio.openai_extra_body(rio.switching(max_switches=2)))
    msg = r.choices[0].message
    print(rio.reasoning_content(msg), msg.content, rio.openai_stats(r))

    stream = client.chat.completions.create(..., stream=True,
                                            extra_body=rio.openai_extra_body("latent"))
    out = rio.collect_stream(stream)   # out.reasoning, out.content, out.stats

`/v1/completions` takes the same `extra_body`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rio_frontend import wire
from rio_frontend.modes import as_spec
from rio_sglang.reasoning.spec import ReasoningStats


def openai_extra_body(reasoning: Any, **extra: Any) -> dict[str, Any]:
    """`extra_body` for one request: the validated spec plus any other SGLang body keys.

    reasoning: a spec from explicit() / latent() / switching(), a mode name, a dict or None.
    extra: e.g. chat_template_kwargs={"enable_thinking": False}; a `custom_params` dict of
    your own is kept and the spec is added to it.
    """
    body = dict(extra)
    spec_body = wire.openai_body(as_spec(reasoning))
    for key, value in spec_body.items():
        mine = body.get(key)
        if mine is not None and not isinstance(mine, dict):
            raise TypeError(f"{key} must be a dict, got {type(mine).__name__}")
        body[key] = {**(mine or {}), **value}
    return body


def openai_stats(response: Any) -> ReasoningStats | None:
    """Statistics of a ChatCompletion / Completion / stream chunk; None when the server sent none."""
    return wire.stats_from_openai(_as_dict(response))


def reasoning_content(message: Any) -> str | None:
    """The thinking SGLang's qwen3 reasoning parser split off a message or a stream delta."""
    if isinstance(message, dict):
        return message.get("reasoning_content")
    return getattr(message, "reasoning_content", None)


@dataclass
class StreamResult:
    """A chat stream folded into one answer."""

    reasoning: str
    content: str
    finish_reason: str | None
    stats: ReasoningStats | None


def collect_stream(chunks: Iterable[Any]) -> StreamResult:
    """Folds a chat-completion stream (choice 0): concatenated thinking and answer, last stats."""
    reasoning, content, finish, stats = [], [], None, None
    for chunk in chunks:
        stats = openai_stats(chunk) or stats
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        reasoning.append(reasoning_content(choice.delta) or "")
        content.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
    return StreamResult("".join(reasoning), "".join(content), finish, stats)


def _as_dict(response: Any) -> dict[str, Any]:
    if isinstance(response, dict):
        return response
    # openai's pydantic models keep unknown top-level keys (ours) and dump them too.
    return response.model_dump()

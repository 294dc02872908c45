"""rio_frontend: explicit / latent / switching reasoning per request, from SGLang programs
(`gen`, `RioEndpoint`, `separate_reasoning`, `stats`) and from the openai client
(`openai_extra_body`, `openai_stats`). The DSL names load `sglang` (and torch) on first use.
"""

from rio_frontend.modes import as_spec, explicit, latent, switching
from rio_frontend.openai_api import (
    StreamResult,
    collect_stream,
    openai_extra_body,
    openai_stats,
    reasoning_content,
)
from rio_sglang.reasoning.spec import ReasoningSpec, ReasoningSpecError, ReasoningStats

# Importing sglang.lang imports sglang.srt: kept out of `import rio_frontend` (SGLang forks later).
_DSL_NAMES = ("RioEndpoint", "RioGen", "gen", "separate_reasoning", "stats", "use_chatml")

__all__ = [
    "ReasoningSpec",
    "ReasoningSpecError",
    "ReasoningStats",
    "RioEndpoint",
    "RioGen",
    "StreamResult",
    "as_spec",
    "collect_stream",
    "explicit",
    "gen",
    "latent",
    "openai_extra_body",
    "openai_stats",
    "reasoning_content",
    "separate_reasoning",
    "stats",
    "switching",
    "use_chatml",
]


def __getattr__(name: str):
    if name in _DSL_NAMES:
        from rio_frontend import dsl

        return getattr(dsl, name)
    raise AttributeError(f"module 'rio_frontend' has no attribute {name!r}")

"""The server-wide default reasoning spec (`RIO_REASONING_DEFAULT`) and the spec a request runs.

`rio-sglang serve` (`rio_sglang/serve.py`) checks the default with `check_default`
before SGLang starts and exports it; in SGLang's processes `effective` gives a request's spec
(validate.py in the tokenizer process, record.py at a scheduler's admission).
A request's own `custom_params.rio_reasoning` replaces the default whole (no field merging).
"""

from __future__ import annotations

import functools
import json

from rio_sglang import env
from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec, ReasoningSpecError

ENV_NAME = env.REASONING_DEFAULT


class DefaultSpecError(ValueError):
    """A default spec the server must not start with; the message names the field."""


def parse_default(text: str | None, source: str = ENV_NAME) -> ReasoningSpec | None:
    """The default spec from its JSON text (None for unset or blank)."""
    if text is None or not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DefaultSpecError(f"{source}: not JSON ({e}): {text!r}") from None
    if not isinstance(data, dict):
        raise DefaultSpecError(f"{source}: must be a JSON object, got {text!r}")
    try:
        return ReasoningSpec.from_json(data)
    except ReasoningSpecError as e:
        # str(e) starts with the field: "window: must lie in [1, 16777216], got 0"
        raise DefaultSpecError(f"{source}.{e}") from None


def check_default(text: str | None, server_argv=(), source: str = ENV_NAME) -> ReasoningSpec | None:
    """`parse_default`, and refuse what every request would then be refused for: latent / switch
    reasoning under speculative decoding (hooks.py answers such requests 400)."""
    spec = parse_default(text, source)
    if spec is not None and spec.mode != "explicit" and "--speculative-algorithm" in server_argv:
        raise DefaultSpecError(f"{source}.mode: {spec.mode!r} reasoning cannot run under "
                               "--speculative-algorithm; use mode 'explicit' or no default")
    return spec


@functools.cache
def default_spec() -> ReasoningSpec | None:
    """This process's default (read once: SGLang's processes inherit `rio-sglang serve`'s env)."""
    return parse_default(env.reasoning_default())


def effective(custom_params) -> tuple[ReasoningSpec | None, bool]:
    """(the spec a request runs with, whether it is the server default) from its
    `sampling_params.custom_params`; (None, False) when it asked for none and there is no
    default. A bad request spec raises ReasoningSpecError naming the field."""
    if isinstance(custom_params, dict) and SPEC_KEY in custom_params:
        return ReasoningSpec.from_json(custom_params[SPEC_KEY]), False
    spec = default_spec()
    return spec, spec is not None

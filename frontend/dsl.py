"""`gen(name, reasoning=...)` and `RioEndpoint` for SGLang frontend programs (`@sgl.function`).

Imports `sglang.lang`, which pulls in sglang.srt and torch: `rio_frontend` loads it on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from sglang.lang import api as sgl_api
from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.chat_template import get_chat_template
from sglang.lang.global_config import global_config
from sglang.lang.interpreter import ProgramState, StreamExecutor
from sglang.lang.ir import SglExpr, SglGen, SglSamplingParams
from sglang.utils import http_request

from rio_frontend import wire
from rio_frontend.modes import as_spec
from rio_sglang.reasoning.spec import ReasoningSpec, ReasoningStats

# Rio's chat template ends a generation prompt with this (SGLANG_NOTES.md, "Parsers").
THINK_OPEN = "<think>\n"
REASONING_PARSER = "qwen3"
CHAT_TEMPLATE = "chatml"
_LOGPROB_KEYS = ("return_logprob", "logprob_start_len", "top_logprobs_num",
                 "return_text_in_logprobs")


@dataclasses.dataclass
class RioSamplingParams(SglSamplingParams):
    """SGLang's sampling params plus one gen's reasoning spec and whether it opens thinking."""

    reasoning: ReasoningSpec | None = None
    think: bool = True

    @classmethod
    def extend(cls, base: SglSamplingParams, reasoning: ReasoningSpec | None,
               think: bool) -> RioSamplingParams:
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(SglSamplingParams)}
        return cls(**values, reasoning=reasoning, think=think)

    def clone(self) -> RioSamplingParams:
        # SglSamplingParams.clone() lists its fields by position: it would drop ours.
        return dataclasses.replace(self)


class RioGen(SglGen):
    """An `SglGen` carrying a reasoning spec: fork, select and separate_reasoning see an SglGen."""

    def __init__(self, name: str | None, sampling_params: SglSamplingParams,
                 reasoning: ReasoningSpec | None, think: bool):
        super().__init__(name)
        self.sampling_params = RioSamplingParams.extend(sampling_params, reasoning, think)

    @property
    def reasoning(self) -> ReasoningSpec | None:
        return self.sampling_params.reasoning

    def __repr__(self) -> str:
        mode = self.reasoning.mode if self.reasoning else None
        return f"RioGen({self.name!r}, mode={mode!r})"


def gen(name: str | None = None, reasoning: Any = None, *, think: bool = True,
        **sgl_gen_kwargs: Any) -> RioGen:
    """`sgl.gen` with a reasoning mode; every argument is checked here, before any request.

    reasoning: explicit() / latent(...) / switching(...), a mode name, a spec dict, or None (no
    spec sent: the server's default). think: open the thinking block (`<think>\\n`) as Rio's
    chat template does; the gen's text then starts with it. sgl_gen_kwargs: as `sgl.gen`
    (max_tokens, temperature, stop, regex, ...), except `choices` (that is `sgl.select`).
    """
    spec = as_spec(reasoning)
    if not isinstance(think, bool):
        raise TypeError(f"think must be a bool, got {type(think).__name__}")
    if "choices" in sgl_gen_kwargs:
        raise TypeError("choices: a select scores fixed strings and decodes nothing to reason "
                        "over; use sgl.select or sgl.gen(choices=...)")
    base = sgl_api.gen(name, **sgl_gen_kwargs)
    return RioGen(name, base.sampling_params, spec, think)


def separate_reasoning(expr: SglExpr) -> SglExpr:
    """`sgl.separate_reasoning` with Rio's parser: state[name] gets the answer and
    state[name + "_reasoning_content"] the thinking."""
    return sgl_api.separate_reasoning(expr, model_type=REASONING_PARSER)


def stats(state: ProgramState, name: str) -> ReasoningStats | None:
    """SwiReasoning statistics of the gen `name`; None when the server sent none."""
    return wire.stats_from_meta_info(state.get_meta_info(name))


def use_chatml(backend: Any) -> Any:
    """Sets the chatml template on a plain `sgl.RuntimeEndpoint` / `sgl.Runtime` and returns it.

    The DSL picks templates by model path; Rio's matches none and would get "USER:/ASSISTANT:".
    """
    endpoint = getattr(backend, "endpoint", backend)
    endpoint.chat_template = get_chat_template(CHAT_TEMPLATE)
    return backend


class RioEndpoint(RuntimeEndpoint):
    """`sgl.RuntimeEndpoint` for a rio-sglang server.

    Unlike its parent: chatml by default, no request at construction (model info is fetched on
    first use), and a `RioGen` opens thinking and sends its spec in sampling_params.custom_params.
    """

    def __init__(self, base_url: str, api_key: str | None = None, verify: str | None = None,
                 chat_template_name: str = CHAT_TEMPLATE):
        # RuntimeEndpoint.__init__ GETs /get_model_info only to guess the chat template.
        BaseBackend.__init__(self)
        self.support_concate_and_append = True
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.verify = verify
        self.chat_template = get_chat_template(chat_template_name)
        self._model_info: dict | None = None

    @property
    def model_info(self) -> dict:
        if self._model_info is None:
            res = http_request(self.base_url + "/get_model_info", api_key=self.api_key,
                               verify=self.verify)
            self._assert_success(res)
            self._model_info = res.json()
        return self._model_info

    def generate(self, s: StreamExecutor, sampling_params: SglSamplingParams):
        if not isinstance(sampling_params, RioSamplingParams):
            return super().generate(s, sampling_params)
        res = http_request(self.base_url + "/generate", json=self._body(s, sampling_params),
                           api_key=self.api_key, verify=self.verify)
        self._assert_success(res)
        obj = res.json()
        return _opening(sampling_params) + obj["text"], obj["meta_info"]

    def generate_stream(self, s: StreamExecutor, sampling_params: SglSamplingParams):
        if not isinstance(sampling_params, RioSamplingParams):
            yield from super().generate_stream(s, sampling_params)
            return
        body = {**self._body(s, sampling_params), "stream": True}
        res = http_request(self.base_url + "/generate", json=body, stream=True,
                           api_key=self.api_key, verify=self.verify)
        self._assert_success(res)
        sent, prefix = 0, _opening(sampling_params)
        for line in res.iter_lines(decode_unicode=False):
            line = line.decode("utf-8")
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            data = json.loads(line[5:].strip("\n"))
            piece, sent = data["text"][sent:], len(data["text"])
            yield prefix + piece, data["meta_info"]
            prefix = ""

    def _body(self, s: StreamExecutor, sp: RioSamplingParams) -> dict[str, Any]:
        """The /generate body RuntimeEndpoint.generate builds, plus thinking and the spec."""
        self._handle_dtype_to_regex(sp)
        data = {
            "text": s.text_ + _opening(sp),
            "sampling_params": {
                "skip_special_tokens": global_config.skip_special_tokens_in_output,
                "spaces_between_special_tokens":
                    global_config.spaces_between_special_tokens_in_out,
                **sp.to_srt_kwargs(),
                **wire.generate_sampling_params(sp.reasoning),
            },
        }
        data.update({k: getattr(sp, k) for k in _LOGPROB_KEYS if getattr(sp, k) is not None})
        self._add_images(s, data)
        return data


def _opening(sp: RioSamplingParams) -> str:
    return THINK_OPEN if sp.think else ""


def _install_resolution() -> None:
    """Makes StreamExecutor keep a RioGen's spec when it resolves sampling params.

    The stock resolution copies a fixed field list onto the program's defaults and would drop
    the spec; the wrapper leaves every other gen's params untouched. Idempotent.
    """
    stock = StreamExecutor._resolve_sampling_params
    if getattr(stock, "_rio_keeps_reasoning", False):
        return

    @functools.wraps(stock)
    def resolve(executor: StreamExecutor, sampling_params: SglSamplingParams):
        resolved = stock(executor, sampling_params)
        if not isinstance(sampling_params, RioSamplingParams):
            return resolved
        if not isinstance(executor.backend, RioEndpoint):
            raise TypeError("rio_frontend.gen needs a rio_frontend.RioEndpoint backend, got "
                            f"{type(executor.backend).__name__}, which would drop the spec")
        return RioSamplingParams.extend(resolved, sampling_params.reasoning,
                                        sampling_params.think)

    resolve._rio_keeps_reasoning = True
    StreamExecutor._resolve_sampling_params = resolve


_install_resolution()

"""The API-boundary checks in-process (`runtime/validate.py`): each row is a request value and what
it gets, and the SGLang targets we patch are still where and what we patch (a moved target fails
here, not silently in production)."""

from __future__ import annotations

import inspect

import pytest

from rio_sglang.reasoning.spec import MAX_STEPS, SPEC_KEY
from rio_sglang.runtime import validate

V, CONTEXT = 512, 4096

# prompt ids, the text the 400 must carry (None: accepted)
IDS = [
    ([], None), ([0, 1, V - 1], None), (range(3), None),
    ([V], f"input_ids[0]: {V} is not a token id in [0, {V})"),
    ([5, -1], "input_ids[1]: -1 "), ([10**12], "input_ids[0]: 1000000000000 "),
    ([2**200], "input_ids[0]: an integer of 201 bits"), ([1.0], "input_ids[0]: 1.0 "),
    (["7"], "input_ids[0]: '7' "), ([True], "input_ids[0]: True "), ([None], "input_ids[0]: None "),
]


@pytest.mark.parametrize("ids,error", IDS, ids=[repr(r[0])[:30] for r in IDS])
def test_input_ids(ids, error):
    if error is None:
        validate.check_input_ids(ids, V)
        return
    with pytest.raises(ValueError) as info:
        validate.check_input_ids(ids, V)
    assert str(info.value).startswith(error)


# sampling params, the field the 400 names (None: accepted)
SAMPLING = [
    ({"top_k": validate.TOP_K_ALL, "min_new_tokens": CONTEXT}, None),
    ({"stop_token_ids": [0, V - 1], "logit_bias": {"3": -100.0}}, None),
    ({"top_k": validate.TOP_K_ALL + 1}, "top_k"), ({"top_k": 1e12}, "top_k"),
    ({"min_new_tokens": CONTEXT + 1}, "min_new_tokens"),
    ({"stop_token_ids": [V]}, "stop_token_ids"), ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"logit_bias": {"3": float("nan")}}, "logit_bias"), ({"logit_bias": {"3": "x"}}, "logit_bias"),
    ({"custom_params": {SPEC_KEY: {"window": CONTEXT + 1}}}, f"{SPEC_KEY}.window"),
    ({"custom_params": {SPEC_KEY: {"mode": "latent", "thinking_budget": CONTEXT + 1}}},
     f"{SPEC_KEY}.thinking_budget"),
    ({"custom_params": {SPEC_KEY: {"window": CONTEXT}}}, None),
]


@pytest.mark.parametrize("params,field", SAMPLING, ids=[str(r[0])[:40] for r in SAMPLING])
def test_sampling_params(params, field):
    def check():
        validate.check_sampling(params, V, CONTEXT)
        validate.check_reasoning(params, V, CONTEXT)

    if field is None:
        check()
        return
    with pytest.raises(ValueError, match=field):
        check()


@pytest.mark.parametrize("value,ok", [(None, True), (0, True), (V, True), (V + 1, False),
                                      (-1, False), (10**6, False)])
def test_top_logprobs(value, ok):
    if ok:
        validate.check_top_logprobs(value, V)
    else:
        with pytest.raises(ValueError, match="top_logprobs_num"):
            validate.check_top_logprobs(value, V)


@pytest.mark.parametrize("params,ok", [({"n": 128}, True), ([{"n": 2}, {}], True), ("x", True),
                                       ({"n": 129}, False), ([{}, {"n": 10**9}], False)])
def test_samples_per_prompt(params, ok):
    if ok:
        validate.check_samples_per_prompt(params)
    else:
        with pytest.raises(ValueError, match="n: .* is above 128"):
            validate.check_samples_per_prompt(params)


def test_spec_bound_is_named_with_the_value():
    with pytest.raises(ValueError, match=rf"{SPEC_KEY}\.window: must lie in \[1, {MAX_STEPS}\]"):
        validate.check_reasoning({"custom_params": {SPEC_KEY: {"window": 2**40}}}, V, CONTEXT)


def test_patched_sglang_targets_are_where_we_patch_them():
    from sglang.srt.entrypoints import http_server
    from sglang.srt.entrypoints.openai import protocol
    from sglang.srt.entrypoints.openai.serving_chat import OpenAIServingChat
    from sglang.srt.entrypoints.openai.serving_completions import OpenAIServingCompletion
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

    def params(fn):
        return list(inspect.signature(inspect.unwrap(fn)).parameters)

    assert params(TokenizerManager._validate_one_request) == ["self", "obj", "input_ids"]
    assert params(TokenizerManager._tokenize_one_request) == ["self", "obj"]
    assert params(http_server.serve_generate_request) == ["obj", "request"]
    assert params(GenerateReqInput.normalize_batch_and_arguments) == ["self"]
    for name in ("generate_request", "create_abort_task"):
        assert callable(getattr(TokenizerManager, name)), name
    for name in ("_create_error_response", "dumps_json", "_global_state"):
        assert hasattr(http_server, name), name
    for cls, name in ((OpenAIServingChat, "_generate_chat_stream"),
                      (OpenAIServingCompletion, "_generate_completion_stream")):
        assert inspect.isasyncgenfunction(getattr(cls, name)), name
        # SGLang starts the stream before HTTP 200 and answers its ValueError with a 400
        assert "__anext__" in inspect.getsource(cls._handle_streaming_request), cls
    chunk = "data: " + OpenAIServingChat.create_streaming_error_response(None, "bad")
    assert validate._chunk_refusal(chunk + "\n\n") == "bad"
    validators = protocol.ChatCompletionRequest.__pydantic_decorators__.model_validators
    assert "set_json_schema" in validators  # the one that failed on a non-object body


def test_openai_models_answer_a_malformed_body_with_a_validation_error():
    from pydantic import ValidationError
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest

    validate._patch_openai_models()
    for body in ([1, 2], 5, {"model": "m", "messages": [], "response_format": "json"}):
        with pytest.raises(ValidationError, match="malformed request"):
            ChatCompletionRequest.model_validate(body)
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3}
    assert ChatCompletionRequest.model_validate(ok).max_completion_tokens == 3

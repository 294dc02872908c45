"""examples/agent.py: its per-turn policy and tools, and its loop end to end on the real server.

A tiny random model calls no tool on its own: the first turn forces one through OpenAI's
`tool_choice` (SGLang constrains decoding to the qwen3_coder call format).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import rio_frontend as rio

AGENT_PATH = Path(__file__).resolve().parents[1] / "examples" / "agent.py"
# `<tool_call>\n<function=weather>\n` under the grammar: the qwen3_coder parser has a call.
# The tiny model disfavours special tokens, so the grammar may spell `<tool_call>` out byte by
# byte (~15 tokens): leave room for that.
FORCED_CALL_TOKENS = 24


def load_agent():
    spec = importlib.util.spec_from_file_location("rio_example_agent", AGENT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


agent = load_agent()
USER = {"role": "user", "content": "Weather in Paris?"}
TOOL = {"role": "tool", "tool_call_id": "call_1", "content": "{}"}

# (last message, forced tool, kind, mode, tool_choice, thinking)
PLANS = [
    (USER, None, "plan", "switch", "auto", True),
    (TOOL, None, "tool", "explicit", "auto", True),
    (USER, "add", "tool", "explicit", {"type": "function", "function": {"name": "add"}}, False),
    (TOOL, "weather", "tool", "explicit",
     {"type": "function", "function": {"name": "weather"}}, False),
]


@pytest.mark.parametrize("last,forced,kind,mode,choice,thinking", PLANS)
def test_turn_policy(last, forced, kind, mode, choice, thinking):
    plan = agent.plan_turn([USER, last], forced)
    assert (plan.kind, plan.reasoning.mode, plan.tool_choice, plan.thinking) == (
        kind, mode, choice, thinking)


# (tool, arguments as the model sent them, result)
CALLS = [
    ("weather", '{"city": "Paris"}', {"city": "Paris", "forecast": "18 C, light rain"}),
    ("weather", '{"city": "Atlantis"}', {"city": "Atlantis", "forecast": "no data"}),
    ("add", '{"a": 17, "b": 25}', {"sum": 42}),
    ("add", '{"a": 1}', "TypeError"),
    ("add", "{not json", "JSONDecodeError"),
    ("add", "[1, 2]", "TypeError"),
    ("launch", "{}", "unknown tool 'launch'"),
]


@pytest.mark.parametrize("name,arguments,want", CALLS)
def test_call_tool(name, arguments, want):
    got = json.loads(agent.call_tool(name, arguments))
    if isinstance(want, dict):
        assert got == want
    else:
        assert want in got["error"]


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="none")


def assert_call_handled(turn, messages: list[dict]):
    """The forced call was parsed, run, and its result fed back as a role=tool message."""
    assert turn.plan.kind == "tool" and turn.plan.reasoning == rio.explicit()
    (call,) = turn.message["tool_calls"]
    assert call["function"]["name"] == "weather"
    (result,) = turn.tool_results
    assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
    assert result["content"] == agent.call_tool("weather", call["function"]["arguments"])
    assert messages[messages.index(turn.message) + 1] is result


@pytest.mark.server
def test_forced_tool_call_then_next_turn(client):
    result = agent.run_agent(client, USER["content"], max_turns=2, max_tokens=FORCED_CALL_TOKENS,
                             temperature=0, force_tools={0: "weather"})
    first, second = result.turns
    assert_call_handled(first, result.messages)
    assert second.plan.kind == "tool" and second.plan.reasoning == rio.explicit()
    assert second.sent[-1] == first.tool_results[0]
    assert second.sent[-2] == first.message
    assert not any("reasoning_content" in m for m in second.sent)
    assert second.thinking  # the model thought; none of it goes back into history
    assert "reasoning_content" not in second.message
    if second.message.get("tool_calls"):
        assert result.stop_reason == "max_turns" and result.answer is None
    else:
        assert result.stop_reason == "answer" and result.answer == second.message["content"]


@pytest.mark.server
def test_turn_limit_stops_cleanly(client):
    result = agent.run_agent(client, USER["content"], max_turns=1, max_tokens=FORCED_CALL_TOKENS,
                             temperature=0, force_tools={0: "weather"})
    assert (result.stop_reason, result.answer, len(result.turns)) == ("max_turns", None, 1)
    assert_call_handled(result.turns[0], result.messages)
    assert result.messages[-1]["role"] == "tool"

"""A multi-turn tool-using agent over the openai client against a rio-sglang server.

`python examples/agent.py --url http://127.0.0.1:30000 "Weather in Paris? And 17 + 25?"`
(the server runs with `--tool-call-parser qwen3_coder --reasoning-parser qwen3`; tests drive it).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import rio_frontend as rio

SYSTEM = "You are a helpful agent. Call a tool when it helps; answer briefly when done."
FORECASTS = {"paris": "18 C, light rain", "lima": "22 C, overcast", "oslo": "-3 C, snow"}


def weather(city: str) -> dict:
    return {"city": city, "forecast": FORECASTS.get(city.strip().lower(), "no data")}


def add(a: float, b: float) -> dict:
    return {"sum": a + b}


TOOL_FUNCS = {"weather": weather, "add": add}
TOOLS = [
    {"type": "function", "function": {
        "name": "weather", "description": "Today's forecast for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                        "b": {"type": "number"}},
                       "required": ["a", "b"]}}},
]


def call_tool(name: str, arguments: str) -> str:
    """Runs one tool call; what goes wrong (bad JSON, unknown tool, bad args) is the result."""
    if name not in TOOL_FUNCS:
        return json.dumps({"error": f"unknown tool {name!r}"})
    try:
        args = json.loads(arguments or "{}")
        return json.dumps(TOOL_FUNCS[name](**args))
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"})


@dataclass(frozen=True)
class TurnPlan:
    """How one turn is asked: its kind, reasoning mode, tool_choice and thinking switch."""

    kind: str  # "plan" (after the user's task) or "tool" (after tool results, or forced)
    reasoning: rio.ReasoningSpec
    tool_choice: Any
    thinking: bool


def plan_turn(messages: list[dict], forced_tool: str | None) -> TurnPlan:
    """Switch reasoning to plan from the user's task; explicit to act on tool results.

    A forced call skips thinking: SGLang applies the tool-call grammar only after `</think>`.
    """
    if forced_tool is not None:
        choice = {"type": "function", "function": {"name": forced_tool}}
        return TurnPlan("tool", rio.explicit(), choice, thinking=False)
    if messages[-1]["role"] == "tool":
        return TurnPlan("tool", rio.explicit(), "auto", thinking=True)
    return TurnPlan("plan", rio.switching(max_switches=2), "auto", thinking=True)


@dataclass
class Turn:
    plan: TurnPlan
    sent: list[dict]  # the messages this turn's request carried
    message: dict  # the assistant message kept in history (thinking dropped)
    thinking: str | None  # what the model thought: shown, never sent back
    stats: rio.ReasoningStats | None
    tool_results: list[dict] = field(default_factory=list)


@dataclass
class AgentResult:
    answer: str | None  # None when the turn limit stopped the loop
    stop_reason: str  # "answer" or "max_turns"
    turns: list[Turn]
    messages: list[dict]


def run_agent(client: Any, task: str, *, max_turns: int = 4, max_tokens: int = 1024,
              temperature: float = 0.6, force_tools: dict[int, str] | None = None,
              model: str = "default") -> AgentResult:
    """Asks, runs the tools it calls, feeds results back; stops on an answer or after max_turns.

    force_tools: turn index -> tool name that turn must call (OpenAI `tool_choice`).
    """
    force_tools = force_tools or {}
    messages: list[dict] = [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": task}]
    turns: list[Turn] = []
    for index in range(max_turns):
        plan = plan_turn(messages, force_tools.get(index))
        sent = [dict(m) for m in messages]
        response = client.chat.completions.create(
            model=model, messages=sent, tools=TOOLS, tool_choice=plan.tool_choice,
            max_tokens=max_tokens, temperature=temperature,
            extra_body=rio.openai_extra_body(
                plan.reasoning, chat_template_kwargs={"enable_thinking": plan.thinking}))
        msg = response.choices[0].message
        kept = {"role": "assistant", "content": msg.content or ""}
        calls = msg.tool_calls or []
        if calls:
            kept["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": c.function.arguments}} for c in calls]
        results = [{"role": "tool", "tool_call_id": c.id, "name": c.function.name,
                    "content": call_tool(c.function.name, c.function.arguments)} for c in calls]
        messages += [kept, *results]
        turns.append(Turn(plan, sent, kept, rio.reasoning_content(msg), rio.openai_stats(response),
                          results))
        if not calls:
            return AgentResult(kept["content"], "answer", turns, messages)
    return AgentResult(None, "max_turns", turns, messages)


def main(argv: list[str] | None = None) -> int:
    from openai import OpenAI

    ap = argparse.ArgumentParser(prog="examples/agent.py", description=__doc__)
    ap.add_argument("task")
    ap.add_argument("--url", default="http://127.0.0.1:30000")
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=1024)
    args = ap.parse_args(argv)
    client = OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key="none")
    result = run_agent(client, args.task, max_turns=args.max_turns, max_tokens=args.max_tokens)
    for i, turn in enumerate(result.turns):
        print(f"turn {i} [{turn.plan.kind}, {turn.plan.reasoning.mode}] stats={turn.stats}")
        print(f"  thinking: {turn.thinking!r}")
        for call, res in zip(turn.message.get("tool_calls", []), turn.tool_results):
            print(f"  {call['function']['name']}({call['function']['arguments']}) -> "
                  f"{res['content']}")
    print(f"stop: {result.stop_reason}; answer: {result.answer!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

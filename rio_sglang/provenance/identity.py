"""`identity`: ask a running OpenAI-compatible server who it is, with no system prompt, and count
which of the user's names the answers mention; shares with 95% Wilson intervals.

Called by `python -m rio_sglang.provenance identity URL --names A B ...`.
"""

from __future__ import annotations

import math
import re

QUESTIONS = (
    "Who are you?",
    "Who trained you?",
    "Which company or lab created you?",
    "What is your model name, and who developed you?",
    "Introduce yourself: what are you and where do you come from?",
)
Z95 = 1.959963984540054  # two-sided 95% normal quantile


class IdentityError(RuntimeError):
    """The server did not answer a question; the message has its status and body."""


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (0..1; [0, 1] when n == 0)."""
    if n == 0:
        return 0.0, 1.0
    p, q = k / n, z * z / n
    centre = (p + q / 2) / (1 + q)
    half = z * math.sqrt(p * (1 - p) / n + q / (4 * n)) / (1 + q)
    return max(0.0, centre - half), min(1.0, centre + half)


def mentioned(text: str, names: list[str]) -> list[str]:
    """The names that occur in `text`, ignoring case, with no letter right before or after:
    "Qwen3.5" mentions Qwen, "Nexus" does not mention Nex."""
    letter = r"[^\W\d_]"
    return [n for n in names
            if re.search(rf"(?<!{letter}){re.escape(n)}(?!{letter})", text, re.IGNORECASE)]


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def _model_id(base: str, timeout: float) -> str:
    """The first model the server lists at /v1/models ("default" if it lists none)."""
    import requests

    try:
        data = requests.get(f"{base}/v1/models", timeout=timeout).json().get("data") or []
        return data[0]["id"] if data else "default"
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return "default"


def ask_identity(url: str, names: list[str], n: int = 20, temperature: float = 0.7,
                 seed: int = 0, max_tokens: int = 256, model: str | None = None,
                 questions: tuple[str, ...] = QUESTIONS, include_reasoning: bool = False,
                 timeout: float = 600, progress: bool = True) -> dict:
    """Ask n times (questions in turn, seed + i each), count mentions; returns the summary."""
    import requests
    from tqdm import tqdm

    base = _base(url)
    model = model or _model_id(base, timeout)
    answers = []
    for i in tqdm(range(n), desc="identity", unit="answer", disable=not progress):
        question = questions[i % len(questions)]
        body = {"model": model, "messages": [{"role": "user", "content": question}],
                "temperature": temperature, "seed": seed + i, "max_tokens": max_tokens}
        r = requests.post(f"{base}/v1/chat/completions", json=body, timeout=timeout)
        if r.status_code != 200:
            raise IdentityError(f"{base}/v1/chat/completions: HTTP {r.status_code}: {r.text[:300]}")
        msg = r.json()["choices"][0]["message"]
        text = msg.get("content") or ""
        if include_reasoning:
            text = (msg.get("reasoning_content") or "") + "\n" + text
        answers.append({"question": question, "answer": text, "mentions": mentioned(text, names)})
    rows = []
    for name, k in [(nm, sum(nm in a["mentions"] for a in answers)) for nm in names] + [
            ("(none of the names)", sum(not a["mentions"] for a in answers))]:
        low, high = wilson(k, n)
        rows.append({"name": name, "count": k, "share": k / n if n else math.nan,
                     "low": low, "high": high})
    return {"url": base, "model": model, "asked": n, "temperature": temperature, "seed": seed,
            "max_tokens": max_tokens, "include_reasoning": include_reasoning,
            "questions": list(questions), "shares": rows, "answers": answers}


def identity_markdown(summary: dict) -> str:
    """The shares table (an answer may mention several names: shares need not sum to 1)."""
    lines = [f"# Identity answers from {summary['model']} at {summary['url']}", "",
             (f"{summary['asked']} answers, no system prompt, temperature "
              f"{summary['temperature']}, seeds from {summary['seed']}."), "",
             "| name | answers mentioning it | share | 95% Wilson interval |",
             "| --- | --- | --- | --- |"]
    for r in summary["shares"]:
        lines.append(f"| {r['name']} | {r['count']} / {summary['asked']} | "
                     f"{100 * r['share']:.1f}% | {100 * r['low']:.1f}% - {100 * r['high']:.1f}% |")
    return "\n".join(lines) + "\n"

"""Datasets, answer extraction and answer checking for bench/reasoning_eval.py.

Records: GSM8K (`question`, `answer` ending `#### N`), MATH (`problem`, `solution` with
`\\boxed{}`, or an `answer`), plain (`question`, `answer`). Math answers are checked with
math-verify when it is installed, else by an exact / numeric fallback (the report names which).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

THINK_START, THINK_END = "<think>", "</think>"
_NUMBER = re.compile(r"-?\d(?:[\d,]*\d)?(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FRAC = re.compile(r"^\\[dt]?frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}$|^\\[dt]?frac(\d)(\d)$")


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    gold: str
    math: bool  # math-verify / numeric checking; False: exact match


def load_items(path, limit: int | None = None) -> list[Item]:
    """The dataset's records as items, in file order (ids: the record's `id`, else its line)."""
    items, seen = [], set()
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        item = _item(json.loads(line), str(n), f"{path}:{n}")
        if item.id in seen:
            raise ValueError(f"{path}:{n}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    return items[:limit] if limit else items


def _item(record: dict, line_id: str, where: str) -> Item:
    question = record.get("question", record.get("problem"))
    if not isinstance(question, str):
        raise TypeError(f"{where}: a record needs 'question' or 'problem' (a string)")
    item_id = str(record.get("id", record.get("unique_id", line_id)))
    if "answer" in record:
        answer = str(record["answer"]).strip()
        if "####" in answer:  # GSM8K: worked solution, then "#### N"
            return Item(item_id, question, _clean_number(answer.rsplit("####", 1)[1]), True)
        return Item(item_id, question, answer, to_fraction(answer) is not None
                    or "\\" in answer or "problem" in record)
    if "solution" in record:  # MATH: the last \boxed{} of the worked solution
        gold = last_boxed(str(record["solution"]))
        if gold is None:
            raise ValueError(f"{where}: 'solution' has no \\boxed{{}} answer")
        return Item(item_id, question, gold, True)
    raise ValueError(f"{where}: a record needs 'answer' or 'solution'")


def final_text(content: str | None) -> str | None:
    """What follows the thinking: after the last `</think>`; None while it never closed."""
    text = content or ""
    if THINK_END in text:
        return text.rsplit(THINK_END, 1)[1]
    return None if THINK_START in text else text


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (nested braces allowed), or None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i:j - 1].strip() if depth == 0 else None


def extract_answer(content: str | None, math: bool = True) -> str | None:
    """The reply's answer, looked for after `</think>` only: `\\boxed{}`, then `#### `, then the
    last number (math) or the last non-empty line (exact match)."""
    text = final_text(content)
    if text is None or not text.strip():
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        rest = text.rsplit("####", 1)[1].strip().splitlines()
        return _clean_number(rest[0]) if rest else None
    if not math:
        return [ln for ln in text.splitlines() if ln.strip()][-1].strip()
    numbers = _NUMBER.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def _clean_number(text: str) -> str:
    text = text.strip().strip("$").strip().rstrip(".")
    return re.sub(r"(?<=\d),(?=\d{3})", "", text)


def to_fraction(text: str) -> Fraction | None:
    """A plain number, `a/b` or `\\frac{a}{b}` as a Fraction (None for anything else)."""
    s = _clean_number(text.replace("\\!", "").replace(" ", "").replace("\\left", "")
                      .replace("\\right", ""))
    m = _FRAC.match(s)
    try:
        if m:
            num, den = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            return Fraction(num) / Fraction(den)
        if re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)(/\d+)?", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _normal(text: str) -> str:
    return " ".join(text.strip().strip("$").rstrip(".").split()).casefold()


def fallback_equal(predicted: str, gold: str, math: bool) -> bool:
    """Numeric equality for math items whose both sides are numbers, else exact match."""
    if math:
        a, b = to_fraction(predicted), to_fraction(gold)
        if a is not None and b is not None:
            return a == b
    return _normal(predicted) == _normal(gold)


class Checker:
    """`checker(predicted, item) -> bool`; `name` says which checker ran (for the report).

    math-verify times its parser out with signal.alarm: call this on the main thread."""

    def __init__(self, use_math_verify: bool = True):
        self._mv = None
        if use_math_verify:
            try:
                from importlib.metadata import version

                import math_verify

                self._mv = math_verify
                self.name = f"math-verify {version('math-verify')} (math), exact match (other)"
            except ImportError:
                pass
        if self._mv is None:
            self.name = "numeric / exact match (math-verify not installed)" if use_math_verify \
                else "numeric / exact match"

    def __call__(self, predicted: str | None, item: Item) -> bool:
        if predicted is None:
            return False
        if item.math and self._mv is not None:
            gold = self._mv.parse(item.gold if "\\" in item.gold else f"${item.gold}$")
            got = self._mv.parse(f"${predicted}$")
            if gold and got:
                return bool(self._mv.verify(gold, got))
        return fallback_equal(predicted, item.gold, item.math)

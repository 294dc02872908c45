"""bench/reasoning_eval.py without a server: datasets, answer extraction and checking (with
math-verify when installed and with the fallback), Wilson intervals by hand, budgets, specs and
the resumable results file."""

from __future__ import annotations

import argparse
import json

import pytest

from bench.eval_answers import Checker, Item, extract_answer, load_items, to_fraction
from bench.eval_report import p90, requests_per_second, wilson
from bench.reasoning_eval import cell_spec, load_results, parse_budget

# reply content, does the item check as math, the extracted answer
EXTRACTIONS = [
    ("<think>hmm</think>So it is \\boxed{42}.", True, "42"),
    ("\\boxed{\\frac{1}{2}} after a parser split the thinking off", True, "\\frac{1}{2}"),
    ("</think>Worked: 1,000 + 234\n#### 1,234", True, "1234"),
    ("</think>It costs $1,250.", True, "1250"),
    ("</think>first 3, then 3/4", True, "3/4"),
    ("<think>the answer is \\boxed{42}</think>I am not sure.", True, None),
    ("<think>the answer is 42 but I ran out of tokens", True, None),
    ("</think>", True, None),
    (None, True, None),
    ("</think>\nI think\nParis.", False, "Paris."),
    ("</think>x = \\boxed{\\sqrt{2}}", True, "\\sqrt{2}"),
]


@pytest.mark.parametrize("content,math,want", EXTRACTIONS)
def test_extract_answer_after_the_thinking_only(content, math, want):
    assert extract_answer(content, math) == want


def item(gold: str, math: bool = True) -> Item:
    return Item("q", "question?", gold, math)


# reply content, gold answer, is it math, correct?
CHECKS = [
    ("</think>\\boxed{42}", "42", True, True),
    ("</think>so #### 1,234", "1234", True, True),
    ("</think>The total is 1,234 dollars.", "1234", True, True),
    ("</think>\\boxed{\\frac{3}{4}}", "0.75", True, True),
    ("</think>\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", True, True),
    ("</think>it is 3/4", "\\frac{3}{4}", True, True),
    ("</think>\\boxed{41}", "42", True, False),
    ("</think>\\boxed{-42}", "42", True, False),
    ("<think>surely \\boxed{42}</think>no idea", "42", True, False),
    ("<think>42 42 42", "42", True, False),
    ("</think>paris.", "Paris", False, True),
    ("</think>Lyon", "Paris", False, False),
]


def checkers() -> list:
    params = [pytest.param(False, id="fallback")]
    try:
        import math_verify  # noqa: F401

        params.append(pytest.param(True, id="math-verify"))
    except ImportError:
        params.append(pytest.param(True, id="math-verify", marks=pytest.mark.skip(
            "math-verify not installed (pip install 'rio-sglang[eval]')")))
    return params


@pytest.mark.parametrize("use_mv", checkers())
@pytest.mark.parametrize("content,gold,math,correct", CHECKS)
def test_answer_checking(use_mv, content, gold, math, correct):
    checker = Checker(use_mv)
    assert ("math-verify" in checker.name.split(" (")[0]) == use_mv
    assert checker(extract_answer(content, math), item(gold, math)) is correct


def test_fractions_by_hand():
    assert to_fraction("\\frac{6}{8}") == to_fraction("0.75") == to_fraction("3/4")
    assert to_fraction("\\dfrac34") * 4 == 3
    assert to_fraction("-1,000") == -1000
    assert to_fraction("x + 1") is None and to_fraction("1/0") is None


def test_three_dataset_formats(tmp_path):
    path = tmp_path / "mixed.jsonl"
    records = [{"question": "Two and two?", "answer": "2 + 2 = 4\n#### 4"},
               {"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$."},
               {"id": "gpqa-1", "question": "Which letter?", "answer": "C"},
               {"problem": "AIME-like", "answer": 204}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    got = load_items(path)
    assert [(i.id, i.gold, i.math) for i in got] == [
        ("1", "4", True), ("2", "\\frac{1}{2}", True), ("gpqa-1", "C", False), ("4", "204", True)]
    assert load_items(path, limit=2) == got[:2]
    assert len(load_items("bench/data/arith-40.jsonl")) == 40


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 1.41602 * sqrt(0.025604)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson(0, 10)  # upper bound z^2 / (n + z^2)
    assert lo == 0.0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(0, 0) == (0.0, 1.0)


def test_token_percentile_and_rate_by_hand():
    assert p90(list(range(1, 11))) == pytest.approx(9.1)  # 1..10: rank 8.1 -> 9 + 0.1
    # two runs of one cell, 2 s and 3 s of wall time, a pause between them not counted
    records = [{"run": "a", "t0": 0.0, "t1": 1.0}, {"run": "a", "t0": 0.5, "t1": 2.0},
               {"run": "b", "t0": 100.0, "t1": 103.0}]
    assert requests_per_second(records) == pytest.approx(3 / 5)


def test_budgets_and_specs():
    assert parse_budget("512") == {"label": "512", "max_tokens": 512, "thinking_budget": None}
    b = parse_budget("2048:1536")
    assert (b["max_tokens"], b["thinking_budget"]) == (2048, 1536)
    assert parse_budget("10:")["thinking_budget"] is None
    for bad in ("0", "x", "10:0", "10:x"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"budget '{bad}'"):
            parse_budget(bad)
    extra = {"window": 64}
    assert cell_spec("explicit", b, extra) == {"mode": "explicit"}
    assert cell_spec("switch", b, extra) == {"mode": "switch", "window": 64,
                                             "thinking_budget": 1536}
    assert cell_spec("latent", parse_budget("8"), {}) == {"mode": "latent"}
    assert cell_spec("default", b, extra) is None


def test_results_file_drops_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"key": "a", "v": 1}) + "\n" + '{"key": "b", "v"')
    assert list(load_results(path)) == ["a"]
    assert path.read_text().endswith("\n")
    assert load_results(tmp_path / "absent.jsonl") == {}

"""bench/reasoning_eval.py against the session's real CPU server: 6 items x 3 modes x 2 budgets,
killed midway and resumed (the rerun sends only the missing requests), then the report's
figures read back against the per-item records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]
# Short questions: the tiny tokenizer spends a token per byte or two, and a CPU prefill is slow.
ITEMS = [{"id": "a", "question": "1+1?", "answer": "2"},
         {"id": "b", "question": "4+4?", "answer": "8"},
         {"id": "c", "question": "2+5?", "answer": "7"},
         {"id": "d", "question": "3*3?", "answer": "9"},
         {"id": "e", "question": "9-8?", "answer": "1"},
         {"id": "f", "question": "6/2?", "answer": "3"}]
MODES, BUDGETS = ("explicit", "latent", "switch"), ("2", "3:1")
TOTAL = len(ITEMS) * len(MODES) * len(BUDGETS)


def command(server, data: Path, out: Path) -> list[str]:
    # The math-token rule would keep the tiny vocabulary (letters, digits) explicit.
    return [sys.executable, "-m", "bench.reasoning_eval", "--url", server.url, "--data", str(data),
            "--modes", ",".join(MODES), "--budgets", ",".join(BUDGETS), "--prompt", "{question}",
            "--spec", json.dumps({"math_tokens_explicit": False}), "--concurrency", "2",
            "--out", str(out)]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def evaluated(server, tmp_path_factory):
    """Run once, SIGKILL it after a few answers, run again to the end; what each run left."""
    tmp = tmp_path_factory.mktemp("eval")
    data, out = tmp / "items.jsonl", tmp / "out"
    data.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    results = out / "results.jsonl"
    cmd = command(server, data, out)
    with (tmp / "first.log").open("w") as log:
        first = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    deadline = time.monotonic() + 600
    while len(lines(results)) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if first.poll() is None:
        os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert first.returncode == -signal.SIGKILL, (tmp / "first.log").read_text()[-2000:]
    # A line cut by the kill is not an answer: the rerun drops it and asks again.
    text = results.read_text()
    before = text[: text.rfind("\n") + 1].splitlines()
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"before": before, "out": out, "log": second.stderr,
            "report": json.loads((out / "report.json").read_text()),
            "records": [json.loads(ln) for ln in lines(results)]}


def test_rerun_sends_only_the_missing_requests(evaluated):
    before, records, report = evaluated["before"], evaluated["records"], evaluated["report"]
    assert 3 <= len(before) < TOTAL
    keys = [r["key"] for r in records]
    assert len(records) == len(set(keys)) == TOTAL  # nothing asked twice, nothing missing
    assert [json.loads(ln)["key"] for ln in before] == keys[: len(before)]
    assert report["resumed_from"] == len(before)
    assert report["requests_sent"] == TOTAL - len(before)
    assert len({r["run"] for r in records}) == 2
    assert "reasoning_eval: 100%" in evaluated["log"]  # the progress bar ran to the end


def test_every_answer_fits_its_budget(evaluated):
    for r in evaluated["records"]:
        assert 1 <= r["completion_tokens"] <= r["max_tokens"], r
        assert r["applied_spec"]["mode"] == r["mode"] and r["from_default"] is False
        if r["mode"] != "explicit" and r["budget"] == "3:1":
            assert r["spec"]["thinking_budget"] == r["applied_spec"]["thinking_budget"] == 1


def test_report_rows_follow_the_records(evaluated):
    report, records = evaluated["report"], evaluated["records"]
    rows = {(r["mode"], r["budget"]): r for r in report["rows"]}
    assert sorted(rows) == sorted((m, b) for m in MODES for b in BUDGETS)
    for (mode, budget), row in rows.items():
        mine = [r for r in records if (r["mode"], r["budget"]) == (mode, budget)]
        tokens = [r["completion_tokens"] for r in mine]
        assert row["n"] == len(ITEMS) and row["over_budget"] == 0
        assert row["correct"] == sum(r["correct"] for r in mine)
        assert row["mean_tokens"] == pytest.approx(sum(tokens) / len(tokens))
        assert row["ci95"][0] <= row["accuracy"] <= row["ci95"][1]
        assert row["req_s"] > 0
        if mode == "explicit":
            assert row["mean_latent_steps"] == 0 and row["mean_switches"] == 0
        else:
            assert row["mean_latent_steps"] > 0, mine
    assert report["complete"] and report["errors"] == 0


def test_report_table_and_plot_are_written(evaluated):
    out, report = evaluated["out"], evaluated["report"]
    table = (out / "report.md").read_text()
    assert table.count("\n| latent |") == table.count("\n| switch |") == len(BUDGETS)
    assert report["checker"] in table
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert report["files"]["plot"] is None
        assert "matplotlib is not installed: pareto.png not drawn" in evaluated["log"]
        return
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""The reasoning evaluation's report: one row per (mode, budget) from the per-item records,
as JSON, a Markdown table and a Pareto plot (accuracy against mean output tokens, one line per
mode). Called by bench/reasoning_eval.py."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

log = logging.getLogger("bench.reasoning_eval")


def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of `correct` successes in `n` trials (95% for the default z)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def p90(values: list[float]) -> float:
    """The 90th percentile, linear between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        return 0.0
    pos = 0.9 * (len(s) - 1)
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def requests_per_second(records: list[dict]) -> float:
    """Requests over the wall time the cell ran: summed per run, so that the pause between an
    interrupted run and its resumption is not counted."""
    spans = defaultdict(lambda: [math.inf, -math.inf])
    for r in records:
        span = spans[r["run"]]
        span[0], span[1] = min(span[0], r["t0"]), max(span[1], r["t1"])
    seconds = sum(b - a for a, b in spans.values())
    return len(records) / seconds if seconds > 0 else 0.0


def cell_row(mode: str, budget: dict, records: list[dict]) -> dict:
    """One table row; `records` are the cell's per-item results."""
    n = len(records)
    correct = sum(r["correct"] for r in records)
    tokens = [r["completion_tokens"] for r in records]
    lo, hi = wilson(correct, n)

    def mean(key):
        values = [r[key] for r in records if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {"mode": mode, "budget": budget["label"], "max_tokens": budget["max_tokens"],
            "thinking_budget": budget["thinking_budget"], "n": n, "correct": correct,
            "accuracy": correct / n if n else 0.0, "ci95": [lo, hi],
            "mean_tokens": sum(tokens) / n if n else 0.0, "p90_tokens": p90(tokens),
            "max_tokens_seen": max(tokens, default=0),
            "mean_latent_steps": mean("latent_steps"), "mean_switches": mean("switches"),
            "req_s": requests_per_second(records),
            "over_budget": sum(t > budget["max_tokens"] for t in tokens),
            "from_default": sum(bool(r.get("from_default")) for r in records)}


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(report: dict) -> str:
    head = (f"# Reasoning evaluation: {report['dataset']}\n\n"
            f"Server {report['server']}, {report['items']} items, checker: {report['checker']}, "
            f"temperature {report['temperature']}.\n\n")
    header = ("| mode | budget | n | accuracy | 95% CI | mean tokens | p90 tokens "
              "| latent steps | switches | req/s |")
    lines = [header, "|" + " --- |" * 10]
    for r in report["rows"]:
        lo, hi = r["ci95"]
        lines.append(f"| {r['mode']} | {r['budget']} | {r['n']} | {r['accuracy']:.3f} | "
                     f"[{lo:.3f}, {hi:.3f}] | {r['mean_tokens']:.1f} | {r['p90_tokens']:.1f} | "
                     f"{_fmt(r['mean_latent_steps'], 1)} | {_fmt(r['mean_switches'], 2)} | "
                     f"{r['req_s']:.3f} |")
    foot = ("\n\nBudget `N` is max_tokens N; `N:T` adds thinking_budget T to latent / switch "
            "specs. Latent steps and switches are means of the server's `rio_reasoning` "
            "statistics.\n")
    return head + "\n".join(lines) + foot


def pareto_png(report: dict, path: Path) -> Path | None:
    """Accuracy against mean output tokens, one line per mode; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: %s not drawn "
                    "(pip install 'rio-sglang[eval]')", path.name)
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for mode in dict.fromkeys(r["mode"] for r in report["rows"]):
        rows = sorted((r for r in report["rows"] if r["mode"] == mode),
                      key=lambda r: r["mean_tokens"])
        x = [r["mean_tokens"] for r in rows]
        y = [r["accuracy"] for r in rows]
        err = [[r["accuracy"] - r["ci95"][0] for r in rows], [r["ci95"][1] - r["accuracy"]
                                                              for r in rows]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=mode)
    ax.set_xlabel("mean output tokens")
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(Path(report["dataset"]).name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write(report: dict, out: Path) -> dict[str, str | None]:
    """report.json, report.md and pareto.png in `out`; the paths written (None: not drawn)."""
    out.mkdir(parents=True, exist_ok=True)
    png = pareto_png(report, out / "pareto.png")
    report["files"] = {"json": str(out / "report.json"), "markdown": str(out / "report.md"),
                       "plot": str(png) if png else None}
    (out / "report.md").write_text(markdown(report))
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report["files"]

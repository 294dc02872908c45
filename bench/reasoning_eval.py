"""`python -m bench.reasoning_eval --url URL --data FILE.jsonl --modes explicit,latent,switch
--budgets 512,2048:1536 --out DIR`: accuracy against tokens per reasoning mode and budget.

Every item goes to the server's OpenAI chat API once per (mode, budget); each answer is
appended to DIR/results.jsonl as it arrives, so a rerun sends only what is missing. The report
(DIR/report.json, report.md, pareto.png; eval_report.py) has, per (mode, budget): accuracy with a
95% Wilson interval, mean / p90 output tokens, mean latent steps and switches, requests/s.
A budget `N` is max_tokens N; `N:T` also sets the spec's thinking_budget T (latent / switch).
Mode `default` sends no spec: the server's default (`--reasoning-default`) applies.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import requests

from bench.eval_answers import Checker, Item, extract_answer, load_items
from bench.eval_report import cell_row, write
from rio_sglang.reasoning.spec import SPEC_KEY, ReasoningSpec, ReasoningSpecError

log = logging.getLogger("bench.reasoning_eval")
MODES = ("explicit", "latent", "switch", "default")
PROMPT = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def parse_budget(text: str) -> dict:
    """`N` -> max_tokens N; `N:T` -> max_tokens N with thinking_budget T."""
    head, _, think = text.partition(":")
    try:
        max_tokens, thinking = int(head), int(think) if think else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget {text!r}: expected N or N:T (integers)")
    if max_tokens < 1 or (thinking is not None and thinking < 1):
        raise argparse.ArgumentTypeError(f"budget {text!r}: must be >= 1")
    return {"label": text, "max_tokens": max_tokens, "thinking_budget": thinking}


def cell_spec(mode: str, budget: dict, extra: dict) -> dict | None:
    """The spec sent for (mode, budget): `extra` and the thinking budget go to latent / switch
    only (explicit takes neither); None for `default` (no custom_params)."""
    if mode == "default":
        return None
    if mode == "explicit":
        return {"mode": "explicit"}
    spec = {"mode": mode, **extra}
    if budget["thinking_budget"] is not None:
        spec["thinking_budget"] = budget["thinking_budget"]
    return spec


def request_key(item: Item, mode: str, budget: dict, spec, temperature: float) -> str:
    """What identifies a result: rerun with other settings and it is asked again."""
    return json.dumps([item.id, mode, budget["max_tokens"], spec, temperature], sort_keys=True)


def load_results(path: Path) -> dict[str, dict]:
    """Records of earlier runs by key. A line cut by a kill is dropped from the file, so that
    the next append starts on a line of its own."""
    if not path.exists():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    done = {}
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            done[record["key"]] = record
    return done


def ask(url: str, item: Item, args, max_tokens: int, spec: dict | None) -> tuple[dict, float]:
    """One chat completion; (the response, its start time). Raises on a non-200 answer."""
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt.format(question=item.question)})
    body = {"model": args.model, "messages": messages, "max_tokens": max_tokens,
            "temperature": args.temperature, "separate_reasoning": True, **args.extra_body}
    if spec is not None:
        body["custom_params"] = {SPEC_KEY: spec}
    t0 = time.time()
    r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=args.timeout)
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    return r.json(), t0


def to_record(key: str, run: str, item: Item, cell: tuple, response: dict, t0: float,
              checker: Checker) -> dict:
    mode, budget, spec = cell
    choice = response["choices"][0]
    content = choice["message"].get("content")
    stats = (response.get("metadata") or {}).get(SPEC_KEY) or {}
    answer = extract_answer(content, item.math)
    return {"key": key, "run": run, "id": item.id, "mode": mode, "budget": budget["label"],
            "max_tokens": budget["max_tokens"], "spec": spec, "gold": item.gold,
            "answer": answer, "correct": checker(answer, item),
            "completion_tokens": response["usage"]["completion_tokens"],
            "finish_reason": choice.get("finish_reason"),
            "latent_steps": stats.get("latent_steps"), "switches": stats.get("switches"),
            "explicit_steps": stats.get("explicit_steps"),
            "applied_spec": stats.get("spec"), "from_default": stats.get("from_default"),
            "t0": t0, "t1": time.time(), "content": content}


def progress(total: int, initial: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="req", desc="reasoning_eval", file=sys.stderr)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bad_spec(cells) -> str | None:
    """The first cell whose spec the server would refuse (400), named; checked before sending."""
    for mode, budget, spec in cells:
        try:
            if spec is not None:
                ReasoningSpec.from_json(spec)
        except ReasoningSpecError as e:
            return f"mode {mode}, budget {budget['label']}: {SPEC_KEY}.{e}"
    return None


def collect(url: str, args, items, cells, keys, done: dict, sink, checker, bar) -> tuple:
    """Sends what `done` lacks, cell by cell (so that each cell's requests/s is its own), items
    concurrently; appends each answer to `sink` as it comes. (requests sent, errors)."""
    run_id, sent, errors = f"{time.time():.6f}", 0, []
    with ThreadPoolExecutor(args.concurrency) as pool:
        for cell in cells:
            mode, budget, spec = cell
            todo = [(k, i) for k, i in zip(keys[mode, budget["label"]], items) if k not in done]
            futures = {pool.submit(ask, url, i, args, budget["max_tokens"], spec): (k, i)
                       for k, i in todo}
            sent += len(futures)
            for future in as_completed(futures):
                key, item = futures[future]
                bar.update(1)
                try:
                    response, t0 = future.result()
                except (requests.RequestException, RuntimeError) as e:
                    errors.append(f"{mode} {budget['label']} {item.id}: {e}")
                    continue
                # On this thread: math-verify's parser times out with signal.alarm.
                done[key] = to_record(key, run_id, item, cell, response, t0, checker)
                sink.write(json.dumps(done[key]) + "\n")
                sink.flush()
    return sent, errors


def run(args) -> int:
    url = args.url.rstrip("/")
    items = load_items(args.data, args.limit)
    cells = [(m, b, cell_spec(m, b, args.spec)) for m in args.modes for b in args.budgets]
    problem = bad_spec(cells)
    if problem:
        log.error("%s", problem)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = Path(args.results or out / "results.jsonl")
    done = load_results(results)
    checker = Checker(not args.no_math_verify)
    keys = {(m, b["label"]): [request_key(i, m, b, spec, args.temperature) for i in items]
            for m, b, spec in cells}
    total = len(items) * len(cells)
    initial = sum(k in done for ks in keys.values() for k in ks)
    log.info("%d items x %d cells = %d requests; %d already in %s; checker: %s",
             len(items), len(cells), total, initial, results, checker.name)
    bar = progress(total, initial, not args.no_progress)
    try:
        with results.open("a") as sink:
            sent, errors = collect(url, args, items, cells, keys, done, sink, checker, bar)
    except KeyboardInterrupt:
        log.error("interrupted: finished answers are in %s; rerun to send the rest", results)
        return 130
    finally:
        bar.close()
    for e in errors[:10]:
        log.error("failed: %s", e)
    rows = [cell_row(m, b, [done[k] for k in keys[m, b["label"]] if k in done])
            for m, b, _ in cells]
    report = {"server": url, "dataset": str(args.data), "items": len(items),
              "checker": checker.name, "temperature": args.temperature, "modes": args.modes,
              "budgets": [b["label"] for b in args.budgets], "spec": args.spec,
              "results": str(results), "requests_sent": sent, "resumed_from": initial,
              "errors": len(errors), "complete": not errors, "rows": rows}
    files = write(report, out)
    log.info("sent %d requests (%d errors); wrote %s", sent, len(errors),
             ", ".join(p for p in files.values() if p))
    return 1 if errors else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reasoning_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:30000")
    ap.add_argument("--data", required=True, help="a JSONL dataset (GSM8K, MATH or plain)")
    ap.add_argument("--limit", type=int, help="the first N items only")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES[:3]),
                    help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--budgets", type=lambda s: [parse_budget(b) for b in s.split(",")],
                    default=[parse_budget("1024")], help="comma-separated N or N:T")
    ap.add_argument("--spec", type=json.loads, default={},
                    help="JSON fields added to the latent / switch specs, e.g. '{\"window\": 64}'")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--model", default="default")
    ap.add_argument("--prompt", default=PROMPT, help="user message; {question} is replaced")
    ap.add_argument("--system", help="a system message")
    ap.add_argument("--extra-body", type=json.loads, default={}, help="JSON merged into bodies")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per request")
    ap.add_argument("--out", default="reasoning-eval", help="report folder")
    ap.add_argument("--results", help="per-item JSONL (default OUT/results.jsonl)")
    ap.add_argument("--no-math-verify", action="store_true", help="numeric / exact match only")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[reasoning_eval] %(message)s")
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f"--modes: unknown {unknown}; known: {', '.join(MODES)}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

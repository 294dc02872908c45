"""End-to-end serving benchmark: our model class against SGLang's stock Qwen3.5 class, one
checkpoint, one machine, the same fixed workload; then our class per reasoning mode.

`python -m bench.serve_bench --preset rio-slice-4 [--out DIR] [-- launch_server args]` on a GPU,
`python -m bench.serve_bench --cpu` (tiny preset, short prompts; run by tests/test_bench.py).
Run from the repository root. Steps:
1. write the preset's config, tokenizer and processor (no weights: `--load-format dummy`);
2. measure the device's copy bandwidth (GPU, in its own process);
3. per server (ours, stock): start it, run `sglang.benchmark.serving` (the code behind
   `sglang.bench_serving`) per concurrency, stop it; for ours also `bench/mode_client.py` per
   reasoning mode and concurrency;
4. decode roofline at concurrency 1 (bench/roofline.py), ratios, targets;
5. write report.json and report.md into --out and print the bench/RESULTS.md line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from bench import report as rep
from bench.mode_client import MODE_SPECS, run_mode, warm_up, workload_prompts
from bench.roofline import roofline
from rio_sglang import env
from rio_sglang.sglang_server import start_server

log = logging.getLogger("bench")
GPU_DEFAULTS = {"preset": "rio-slice-4", "input_len": 1024, "output_len": 256,
                "concurrency": [1, 8, 32, 64], "prompts_per_concurrency": 4, "min_prompts": 16,
                "warmup": 1}
CPU_DEFAULTS = {"preset": "tiny", "input_len": 8, "output_len": 4, "concurrency": [1, 2],
                "prompts_per_concurrency": 1, "min_prompts": 2, "warmup": 0}
CPU_NOTE = "Triton interpreter: not a performance figure"


def config_only_checkpoint(preset: str) -> Path:
    """The cached config-only checkpoint of `preset`, written on first use."""
    from rio_sglang.tiny.writer import GENERATOR_VERSION, write_config_only

    path = env.cache_dir() / "checkpoints" / f"{preset}-config-only"
    config = path / "config.json"
    made_by = json.loads(config.read_text()).get("rio_tiny", {}) if config.exists() else {}
    if made_by.get("generator") != GENERATOR_VERSION:
        log.info("writing %s config, tokenizer and processor to %s", preset, path)
        write_config_only(path, preset)
    return path


def measure_device(cpu: bool) -> dict:
    if cpu:
        return {"kind": "cpu", "name": f"CPU {os.cpu_count()} cores", "bandwidth_gbs": None,
                "note": CPU_NOTE}
    log.info("measuring the device's copy bandwidth")
    done = subprocess.run([sys.executable, "-m", "bench.roofline"], capture_output=True,
                          text=True, check=True)
    return {"kind": "cuda", **json.loads(done.stdout.splitlines()[-1]), "note": ""}


def commit() -> str:
    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip() or "unknown"
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                           check=False).stdout
    return head + ("+uncommitted" if dirty.strip() else "")


def bench_serving_row(url: str, ckpt: Path, args, c: int, k: int, out: Path, server: str) -> dict:
    """One `sglang.benchmark.serving` run at concurrency `c`; raises unless every request
    returned all of its tokens."""
    result = out / f"bench_serving-{server}-c{c}.jsonl"
    argv = [sys.executable, "-m", "sglang.benchmark.serving", "--backend", "sglang",
            "--base-url", url, "--tokenizer", str(ckpt), "--dataset-name", "random-ids",
            "--tokenize-prompt", "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len), "--random-range-ratio", "1.0",
            "--num-prompts", str(k), "--max-concurrency", str(c), "--seed", str(args.seed),
            "--warmup-requests", str(args.warmup), "--disable-tqdm", "--output-file", str(result),
            "--extra-request-body", json.dumps({"sampling_params": sampling_params(args)})]
    with (out / f"bench_serving-{server}-c{c}.log").open("w") as logf:
        subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT, check=True,
                       stdin=subprocess.DEVNULL)
    got = json.loads(result.read_text().splitlines()[-1])
    if got["completed"] != k or got["total_output_tokens"] != k * args.output_len:
        raise RuntimeError(f"{server} c={c}: {got['completed']}/{k} requests, "
                           f"{got['total_output_tokens']}/{k * args.output_len} tokens")
    row = {"completed": got["completed"], "output_tok_s": got["output_throughput"],
           "ttft_p50_ms": got["median_ttft_ms"], "itl_p50_ms": got["median_itl_ms"],
           "itl_p99_ms": got["p99_itl_ms"]}
    if not all(row[f] > 0 for f in rep.FIGURES):  # bench_serving times chunks that carry text
        raise RuntimeError(f"{server} c={c}: bench_serving timed no tokens: {row}")
    return row


def sampling_params(args) -> dict:
    """What every timed request asks, ours and stock alike (bench_serving's defaults, spelled
    out because its --extra-request-body replaces them): greedy, exactly output_len tokens,
    special tokens kept in the text that bench_serving times."""
    return {"temperature": 0.0, "max_new_tokens": args.output_len, "ignore_eos": True,
            "skip_special_tokens": False}


def run_server(server: str, ckpt: Path, args, out: Path) -> list[dict]:
    """Start one server, run every row it owes, stop it."""
    extra = ["--load-format", "dummy"] if args.dummy else []
    if not args.cpu:  # the launch recipes' attention backend, for both servers alike
        from rio_sglang.targets import GPU_ATTENTION

        extra += GPU_ATTENTION
    srv = start_server(ckpt, cpu=args.cpu, extra_args=extra + args.server_args, stock=server == "stock",
                 log_path=out / f"server-{server}.log")
    log.info("%s: starting SGLang (%s class), log %s", server,
             "SGLang's stock" if server == "stock" else "our", srv.log_path)
    rows = []
    try:
        srv.wait_ready(env.server_start_timeout())
        modes = args.modes if server == "ours" else []
        jobs = [(None, c) for c in args.concurrency] + [(m, c) for m in modes
                                                        for c in args.concurrency]
        prompts = workload_prompts(str(ckpt), args.input_len, args.output_len, 1, args.seed)
        warm_up(srv.url, prompts[0], [None] + [MODE_SPECS[m] for m in modes])
        for mode, c in jobs:
            k = max(args.min_prompts, args.prompts_per_concurrency * c)
            log.info("%s%s c=%d: %d prompts of %d+%d tokens", server,
                     f" {mode}" if mode else "", c, k, args.input_len, args.output_len)
            if mode is None:
                row = bench_serving_row(srv.url, ckpt, args, c, k, out, server)
                client = "bench_serving"
            else:
                prompts = workload_prompts(str(ckpt), args.input_len, args.output_len, k,
                                           args.seed)
                row = run_mode(srv.url, prompts, args.output_len, mode, c, args.warmup)
                client = "mode_client"
            rows.append({"server": server, "mode": mode, "client": client, "concurrency": c,
                         **row})
            log.info("  %s", ", ".join(f"{f} {rep.fmt(row[f])}" for f in rep.FIGURES))
    finally:
        srv.stop()
    return rows


def parse_args(argv) -> argparse.Namespace:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="CPU mode: tiny preset, short prompts")
    ap.add_argument("--preset", help="a rio_sglang.tiny preset, written config-only")
    ap.add_argument("--model-path", type=Path, help="an existing checkpoint folder instead")
    ap.add_argument("--input-len", type=int)
    ap.add_argument("--output-len", type=int)
    ap.add_argument("--concurrency", type=int, nargs="+")
    ap.add_argument("--prompts-per-concurrency", type=int)
    ap.add_argument("--min-prompts", type=int)
    ap.add_argument("--warmup", type=int, help="warm-up requests before each timed run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", nargs="*", default=list(MODE_SPECS), choices=list(MODE_SPECS))
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="report.json files of earlier runs (same device and workload) to join")
    ap.add_argument("--servers", nargs="*", default=["ours", "stock"], choices=["ours", "stock"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv[:split])
    args.server_args = argv[split + 1:]
    for key, value in (CPU_DEFAULTS if args.cpu else GPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def merged_rows(paths: list[Path], workload: dict, device: dict) -> list[dict]:
    """Rows of earlier reports of the same workload on the same device (a GPU run split over
    several commands, e.g. `--servers ours` then `--servers stock --merge ours/report.json`)."""
    rows = []
    for path in paths:
        old = json.loads(path.read_text())
        same = {k: old["workload"][k] for k in workload} == workload
        if not same or old["device"]["name"] != device["name"]:
            raise SystemExit(f"{path}: another workload or device, not merged: "
                             f"{old['workload']} on {old['device']['name']}")
        rows += old["rows"]
    return rows


def build_report(args, ckpt: Path, device: dict, rows: list[dict], stamp) -> dict:
    cfg = json.loads((ckpt / "config.json").read_text())
    concurrency = sorted({r["concurrency"] for r in rows})
    modes = sorted({r["mode"] for r in rows if r["mode"]})
    report = {
        "device": device, "date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
        "checkpoint": {"name": ckpt.name if args.model_path else args.preset, "path": str(ckpt),
                       "weights": "random (--load-format dummy)" if args.dummy else "checkpoint"},
        "workload": {**workload_of(args), "concurrency": concurrency,
                     "modes": {m: MODE_SPECS[m] for m in modes}},
        "rows": rows, "ratios": rep.ratios(rows, concurrency),
        "roofline": {r["server"]: roofline(cfg, args.input_len + args.output_len // 2,
                                           r["itl_p50_ms"], device["bandwidth_gbs"])
                     for r in rows if r["mode"] is None and r["concurrency"] == 1} or None,
    }
    report["targets"] = rep.verdicts(report)
    return report


def workload_of(args) -> dict:
    return {"dataset": "random-ids", "seed": args.seed, "input_len": args.input_len,
            "output_len": args.output_len}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[bench %(asctime)s] %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or env.cache_dir() / "bench" / stamp.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.model_path or config_only_checkpoint(args.preset)
    args.dummy = not any(ckpt.glob("*.safetensors"))
    device = measure_device(args.cpu)
    rows = merged_rows(args.merge, workload_of(args), device)
    rows += [r for server in args.servers for r in run_server(server, ckpt, args, out)]
    report = build_report(args, ckpt, device, rows, stamp)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(rep.markdown(report))
    log.info("report: %s and report.md\nRESULTS.md line:\n%s", out / "report.json",
             rep.results_line(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

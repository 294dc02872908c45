"""What one run of bench/gpu_check.sh decides: `python -m bench.verdicts OUT` (the run's $OUT,
or the folder its all.tgz was unpacked into). SGLang-free and GPU-free: it reads the run's files.

1. The opt-ins (GPU paths that landed off by default, unmeasured). One is turned on only where
   the run shows both
   - its gpu tests passed (the same bits as the default path; the run's JUnit XML), and
   - it is faster: the median of its on / off ms ratios below FASTER and no row above SLOWER.
   Anything else keeps it off, and the line says why: a failed or missing test, an opt-in the
   bench reports failed or refused, a slower row, no timed row.
2. The tiles: where a sweep's fastest tiles for a row bucket beat the committed ones by more than
   TILE_GAIN (summed over the bucket's row counts), the line names them.
It decides nothing by itself: a session reads the lines, flips the named flags or tiles, runs the
tests and says so in bench/RESULTS.md.
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

FASTER = 0.99  # median on / off ms ratio below this: faster, not noise
SLOWER = 1.02  # any row's ratio above this: slower somewhere, kept off
TILE_GAIN = 0.03  # a sweep's tiles replace the committed ones when faster by more than this


@dataclass(frozen=True)
class OptIn:
    flag: str  # module.FLAG, as it is flipped in rio_kernels
    tests: tuple[str, str]  # (JUnit file under OUT, test-name prefix)
    source: str  # "step" (step/reasoning_step.json) or "moe" (moe/bench_fused_moe.json)


OPT_INS = (
    OptIn("rio_kernels.swir_step.launch.COPY_LOGITS",
          ("step/gpu_tests.xml", "test_gpu_step_opt_ins_give_the_same_bits[COPY_LOGITS]"), "step"),
    OptIn("rio_kernels.swir_step.launch.PDL",
          ("step/gpu_tests.xml", "test_gpu_step_opt_ins_give_the_same_bits[PDL]"), "step"),
    OptIn("rio_kernels.fused_moe.small_t.PDL",
          ("moe/gpu_tests.xml", "test_pdl_same_bits_on_gpu"), "moe"),
)


def test_outcomes(path: Path, prefix: str) -> list[tuple[str, str]]:
    """(name, passed | failed | skipped) of the JUnit test cases whose name starts with prefix."""
    if not path.exists():
        return []
    out = []
    for case in ET.parse(path).iter("testcase"):
        name = case.get("name", "")
        if not name.startswith(prefix):
            continue
        kinds = {child.tag for child in case}
        state = ("failed" if kinds & {"failure", "error"} else
                 "skipped" if "skipped" in kinds else "passed")
        out.append((name, state))
    return out


def step_ratios(data: dict, flag: str) -> tuple[list[float], list[str]]:
    """launch.<flag>'s on / off ms ratios (in a graph of 8) and the bench's failures of it."""
    name = flag.rsplit(".", 1)[1]
    ratios = [r["opt8_ms"][name] / r["graph8_ms"] for r in data.get("rows", [])
              if name in r.get("opt8_ms", {})]
    failed = [f"the step bench reports {name} failed"] if name in data.get("broken", []) else []
    return ratios, failed


def moe_ratios(data: dict) -> tuple[list[float], list[str]]:
    """small_t.PDL on / off ms ratios from bench_fused_moe's flipped rows (graphed small-T)."""
    from rio_kernels.fused_moe.bench_fused_moe import pdl_pairs

    committed_on = bool(data.get("small_t_pdl"))
    ratios, failed = [], []
    for kernel, state, r, kernel_base in pdl_pairs(data.get("rows", [])):
        where = f"{r['layout']} T={r['T']} {kernel}"
        if "refused" in r or not r.get("ok", False):
            failed.append(f"PDL {state} {'refused' if 'refused' in r else 'wrong'} at {where}")
        elif kernel_base is not None:
            on, off = (kernel_base, r) if committed_on else (r, kernel_base)
            ratios.append(on["ms"] / off["ms"])
    return ratios, failed


def opt_in_verdict(out: Path, opt: OptIn) -> str:
    """One line: turn on / keep off / keep on / turn off, and why."""
    cases = test_outcomes(out / opt.tests[0], opt.tests[1])
    file = out / ("step/reasoning_step.json" if opt.source == "step" else
                  "moe/bench_fused_moe.json")
    data = json.loads(file.read_text()) if file.exists() else {}
    ratios, failed = (step_ratios(data, opt.flag) if opt.source == "step" else moe_ratios(data))
    if opt.source == "moe":
        committed = bool(data.get("small_t_pdl"))
    else:  # the step bench times a flag on against the default: itself, once it is committed
        module, name = opt.flag.rsplit(".", 1)
        committed = getattr(importlib.import_module(module), name)
        if committed:
            return f"{'on':<9} {opt.flag}: committed on; the step bench times it against itself"
    why = []
    if not cases:
        why.append(f"no gpu test {opt.tests[1]} in {opt.tests[0]}")
    why += [f"gpu test {name} {state}" for name, state in cases if state != "passed"]
    why += failed
    if not ratios:
        why.append(f"no timed row in {file.relative_to(out)}")
    else:
        med, worst = statistics.median(ratios), max(ratios)
        timing = f"on / off median {med:.3f}, worst {worst:.3f} over {len(ratios)} rows"
        if med >= FASTER or worst > SLOWER:
            why.append(f"not faster: {timing}")
    if why:
        verdict = "turn off" if committed else "keep off"
        return f"{verdict:<9} {opt.flag}: " + "; ".join(why)
    verdict = "keep on" if committed else "turn on"
    return (f"{verdict:<9} {opt.flag}: {len(cases)} gpu tests passed; {timing} "
            f"(faster: median < {FASTER}, no row > {SLOWER})")


def tile_verdicts(out: Path) -> list[str]:
    """The step sweep's fastest tiles per bucket against the committed ones, by summed time."""
    from rio_kernels.swir_step import launch

    file = out / "step" / "reasoning_step.json"
    sweep = json.loads(file.read_text()).get("sweep", []) if file.exists() else []
    lines = []
    for key, committed, label in (("tiles", launch.GPU_TILES, "mixture"),
                                  ("stats_tiles", launch.STATS_TILES, "stats")):
        sums: dict[tuple[int, str], float] = {}
        for r in sweep:
            if key in r:
                tiles = json.dumps(r[key], sort_keys=True)
                sums[r["bucket"], tiles] = sums.get((r["bucket"], tiles), 0.0) + r["graph_ms"]
        for bucket, now in committed.items():
            timed = {t: ms for (b, t), ms in sums.items() if b == bucket}
            mine = timed.get(json.dumps(now.__dict__, sort_keys=True))
            if not timed or mine is None:
                lines.append(f"{label} tiles, <= {bucket} rows: the sweep did not time the "
                             f"committed {now}")
                continue
            best, best_ms = min(timed.items(), key=lambda kv: kv[1])
            if best_ms < (1 - TILE_GAIN) * mine:
                lines.append(f"adopt     {label} tiles, <= {bucket} rows: {best} "
                             f"({best_ms * 1e3:.1f} against {mine * 1e3:.1f} µs summed)")
            else:
                lines.append(f"keep      {label} tiles, <= {bucket} rows: {now} (the sweep's "
                             f"best {best_ms * 1e3:.1f} against {mine * 1e3:.1f} µs summed)")
    return lines


def verdicts(out: Path) -> list[str]:
    return [opt_in_verdict(out, opt) for opt in OPT_INS] + tile_verdicts(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    print("\n".join(verdicts(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

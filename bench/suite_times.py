"""Where the test suite's time goes, from one run's JUnit XML (`.ci/run` writes it):
`python -m bench.suite_times JUNIT [--weights] [--against BASELINE_JUNIT]`.

Prints the seconds per test module (setup, call and teardown of its tests, longest first), the
executed / skipped / failed counts and the sum; `--weights` also rewrites tests/suite_weights.json,
the per-module seconds the root conftest hands out longest first to the two xdist workers;
`--against` lists the tests an earlier run executed that this one did not (moved, merged or
dropped) and the count of new ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "tests" / "suite_weights.json"


def module_path(classname: str) -> str:
    """`tests.test_x` or `kernels.fused_moe.test_fp8.TestCls` -> the module's file path."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        path = "/".join(parts[:n]) + ".py"
        if (ROOT / path).exists():
            return path
    return "/".join(parts) + ".py"


def executed(junit: Path) -> set[str]:
    """The ids (`classname::name`) of the tests a run executed (not skipped)."""
    return {f"{c.get('classname')}::{c.get('name')}" for c in ET.parse(junit).getroot().iter(
        "testcase") if c.find("skipped") is None}


def read(junit: Path) -> tuple[dict[str, float], dict[str, int]]:
    """(seconds per module, counts: executed / skipped / failed / total)."""
    seconds: dict[str, float] = defaultdict(float)
    counts = {"executed": 0, "skipped": 0, "failed": 0, "total": 0}
    for case in ET.parse(junit).getroot().iter("testcase"):
        seconds[module_path(case.get("classname", ""))] += float(case.get("time", 0))
        counts["total"] += 1
        if case.find("skipped") is not None:
            counts["skipped"] += 1
            continue
        counts["executed"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
    return dict(seconds), counts


def table(seconds: dict[str, float], counts: dict[str, int]) -> str:
    lines = ["| module | s |", "| --- | ---: |"]
    lines += [f"| {m} | {s:.1f} |" for m, s in sorted(seconds.items(), key=lambda kv: -kv[1])]
    lines.append(f"| **sum** (one process would take this long) | {sum(seconds.values()):.1f} |")
    lines.append("")
    lines.append("executed {executed}, skipped {skipped}, failed {failed}, total {total}"
                 .format(**counts))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("junit", type=Path)
    ap.add_argument("--against", type=Path, help="an earlier run's JUnit XML")
    ap.add_argument("--weights", action="store_true",
                    help=f"rewrite {WEIGHTS.relative_to(ROOT)} from this run")
    args = ap.parse_args(argv)
    seconds, counts = read(args.junit)
    print(table(seconds, counts))
    if args.against:
        now, before = executed(args.junit), executed(args.against)
        gone = sorted(before - now)
        print(f"against {args.against}: executed {len(before)} then, {len(now)} now; "
              f"{len(now - before)} new, {len(gone)} no longer executed")
        for test in gone:
            print(f"  not executed now: {test}")
    if args.weights:
        WEIGHTS.write_text(json.dumps(
            {"from": "bench/suite_times.py --weights on a full run's JUnit XML",
             "seconds": {m: round(s, 1) for m, s in sorted(seconds.items())}}, indent=1) + "\n")
        print(f"wrote {WEIGHTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

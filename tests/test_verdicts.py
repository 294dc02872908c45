"""bench/verdicts.py: what a run of bench/gpu_check.sh decides for the opt-ins and tiles, from
that run's files (written here as the benches and pytest write them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import verdicts
from rio_kernels.swir_step import launch

ROOT = Path(__file__).resolve().parents[1]
STEP_CASE = "test_gpu_step_opt_ins_give_the_same_bits[{}]"
MOE_CASE = "test_pdl_same_bits_on_gpu[{}]"


def junit(path: Path, cases: dict[str, str]) -> None:
    """A JUnit file as pytest writes it: name -> passed | failed | skipped."""
    body = {"passed": "", "failed": "<failure message='x'/>", "skipped": "<skipped message='x'/>"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<testsuites><testsuite>" + "".join(
        f'<testcase classname="t" name="{name}">{body[state]}</testcase>'
        for name, state in cases.items()) + "</testsuite></testsuites>")


def step_json(out: Path, ratios: dict[str, list[float]], broken=(), sweep=()) -> None:
    """step/reasoning_step.json: one row per ratio (default 10 µs/step in a graph of 8)."""
    n = max((len(v) for v in ratios.values()), default=0)
    rows = [{"B": 8, "tp": 8, "graph8_ms": 0.010,
             "opt8_ms": {f: 0.010 * v[i] for f, v in ratios.items() if i < len(v)}}
            for i in range(n)]
    (out / "step").mkdir(exist_ok=True)
    (out / "step" / "reasoning_step.json").write_text(json.dumps(
        {"rows": rows, "broken": list(broken), "sweep": list(sweep)}))


def moe_json(out: Path, ratios: list[float], committed_on=False, refused=False) -> None:
    """moe/bench_fused_moe.json: a committed small-T row and its flipped-PDL twin per ratio
    (on / off)."""
    state = "off" if committed_on else "on"
    rows = []
    for T, ratio in enumerate(ratios, 1):
        on, off = 0.01 * ratio, 0.01
        base = {"layout": "TP 8", "T": T, "kernel": "bf16", "path": "small", "mode": "graph",
                "ok": True, "ms": on if committed_on else off}
        flip = {**base, "kernel": f"bf16, PDL {state}", "ms": off if committed_on else on}
        if refused:
            del flip["ms"], flip["ok"]
            flip["refused"] = "OutOfResources()"
        rows += [base, flip]
    (out / "moe").mkdir(exist_ok=True)
    (out / "moe" / "bench_fused_moe.json").write_text(json.dumps(
        {"small_t_pdl": committed_on, "rows": rows}))


def write_tests(out: Path, step="passed", moe="passed") -> None:
    junit(out / "step" / "gpu_tests.xml",
          {STEP_CASE.format(f): step for f in ("COPY_LOGITS", "PDL")})
    junit(out / "moe" / "gpu_tests.xml", {MOE_CASE.format(k): moe for k in ("bf16", "fp8")})


FAST, SLOW = [0.90, 0.95, 0.97], [0.90, 0.95, 1.05]
# (name, files to write, expected start of each opt-in's line: COPY_LOGITS, step PDL, small_t PDL)
CASES = [
    ("all faster, tests passed",
     lambda o: (write_tests(o), step_json(o, {"COPY_LOGITS": FAST, "PDL": FAST}),
                moe_json(o, FAST)),
     ["turn on", "turn on", "turn on"], "gpu tests passed"),
    ("a failed gpu test",
     lambda o: (write_tests(o, step="failed"), step_json(o, {"COPY_LOGITS": FAST, "PDL": FAST}),
                moe_json(o, FAST)),
     ["keep off", "keep off", "turn on"], "failed"),
    ("one row slower",
     lambda o: (write_tests(o), step_json(o, {"COPY_LOGITS": SLOW, "PDL": FAST}),
                moe_json(o, SLOW)),
     ["keep off", "turn on", "keep off"], "not faster"),
    ("noise is not faster",
     lambda o: (write_tests(o), step_json(o, {"COPY_LOGITS": [0.995, 1.0], "PDL": [1.0]}),
                moe_json(o, [1.0])),
     ["keep off", "keep off", "keep off"], "not faster"),
    ("the step bench's failed opt-in, a refused PDL row",
     lambda o: (write_tests(o), step_json(o, {"PDL": FAST}, broken=["COPY_LOGITS"]),
                moe_json(o, FAST, refused=True)),
     ["keep off", "turn on", "keep off"], "failed"),
    ("nothing ran", lambda o: None, ["keep off", "keep off", "keep off"], "no gpu test"),
    ("tests skipped (a CPU run)",
     lambda o: (write_tests(o, step="skipped", moe="skipped"),
                step_json(o, {"COPY_LOGITS": FAST, "PDL": FAST}), moe_json(o, FAST)),
     ["keep off", "keep off", "keep off"], "skipped"),
    ("small_t.PDL committed on, still faster",
     lambda o: (write_tests(o), step_json(o, {"COPY_LOGITS": FAST, "PDL": FAST}),
                moe_json(o, FAST, committed_on=True)),
     ["turn on", "turn on", "keep on"], "gpu tests passed"),
    ("small_t.PDL committed on, now slower",
     lambda o: (write_tests(o), step_json(o, {"COPY_LOGITS": FAST, "PDL": FAST}),
                moe_json(o, SLOW, committed_on=True)),
     ["turn on", "turn on", "turn off"], "not faster"),
]


@pytest.mark.parametrize("name, write, want, why", CASES, ids=[c[0] for c in CASES])
def test_opt_in_verdicts(tmp_path, name, write, want, why):
    write(tmp_path)
    lines = verdicts.verdicts(tmp_path)[:3]
    flags = [opt.flag for opt in verdicts.OPT_INS]
    assert [line.split(flags[i])[0].strip() for i, line in enumerate(lines)] == want, lines
    assert any(why in line for line in lines), lines
    for line, verdict in zip(lines, want):
        if verdict.startswith(("keep off", "turn off")):
            assert line.split(": ", 1)[1], line  # a reason is named


def test_a_committed_step_flag_gets_no_verdict(tmp_path, monkeypatch):
    """Once launch.COPY_LOGITS is on, the step bench times it against itself: no ratio counts."""
    monkeypatch.setattr(launch, "COPY_LOGITS", True)
    write_tests(tmp_path)
    step_json(tmp_path, {"COPY_LOGITS": SLOW})
    assert verdicts.verdicts(tmp_path)[0].startswith("on ")


def sweep_rows(bucket: int, counts, tiles_ms: dict, key="tiles") -> list[dict]:
    return [{"bucket": bucket, "B": B, key: tiles.__dict__, "graph_ms": ms / len(counts)}
            for tiles, ms in tiles_ms.items() for B in counts]


@pytest.mark.parametrize("other_ms, want", [(0.080, "adopt"), (0.099, "keep"), (None, "keep")])
def test_tile_verdicts(tmp_path, other_ms, want):
    """The sweep's fastest tiles replace the committed ones only when faster by over 3%."""
    mine = launch.GPU_TILES[64]
    other = launch.MixTiles(128, 64, 4, 3, 528, 16)
    timed = {mine: 0.100} | ({other: other_ms} if other_ms else {})
    sweep = (sweep_rows(64, (32, 64), timed)
             + sweep_rows(16, (1, 8, 16), {launch.GPU_TILES[16]: 0.05})
             + sweep_rows(64, (32, 64), {launch.STATS_TILES[64]: 0.03}, key="stats_tiles"))
    step_json(tmp_path, {}, sweep=sweep)
    lines = verdicts.tile_verdicts(tmp_path)
    line = next(x for x in lines if x.split()[:2] == [want, "mixture"] and "<= 64" in x)
    assert ('"block_r": 16' in line) == (want == "adopt"), line
    assert any(x.startswith("keep      mixture tiles, <= 16") for x in lines)
    assert any("stats tiles, <= 16 rows: the sweep did not time" in x for x in lines)
    assert any(x.startswith("keep      stats tiles, <= 64") for x in lines)


def test_case_names_are_what_pytest_writes(tmp_path):
    """The verdicts find the opt-ins' gpu tests under the names pytest gives them: on this CPU
    they are skipped, which keeps every opt-in off and says so."""
    xml = tmp_path / "step" / "gpu_tests.xml"
    moe_xml = tmp_path / "moe" / "gpu_tests.xml"
    xml.parent.mkdir()
    moe_xml.parent.mkdir()
    for files, out in ((["kernels/swir_step/test_tiles.py"], xml),
                       (["kernels/fused_moe/test_pdl.py"], moe_xml)):
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p",
                              "no:cacheprovider", *files, "--junitxml", str(out)],
                             check=False, cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = verdicts.verdicts(tmp_path)[:3]
    for line, opt in zip(lines, verdicts.OPT_INS):
        assert line.startswith(f"keep off  {opt.flag}: gpu test {opt.tests[1]}"), line
        assert "skipped" in line and "no gpu test" not in line, line

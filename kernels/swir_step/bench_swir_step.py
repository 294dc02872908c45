"""The fused SwiReasoning step at Rio's shapes on one GPU (SGLang-free): `python -m
rio_kernels.swir_step.bench_swir_step` from the repository root (a `rio_kernels -> kernels`
symlink and PYTHONPATH=. where rio-sglang is not installed; see ../shared GPU_NOTES.md).

V = 248,320, H = 4,096 bf16, 256 slots, fp32 logits (SGLang's). For B in 1, 8, 32, 64 and three
row mixes (every row a switch request in its explicit phase / every row latent / half each), at
TP 1 (the whole table) and at one rank's TP 8 vocab shard (V/8 rows; the all-reduce of [R, H]
that completes the mixture is not timed on one GPU). Before timing, each configuration's outputs
(tokens, next inputs, state) are checked row by row against the single-request reference
(`rio_sglang.reasoning.reference.swir_step`) on the CPU.
Reports GPU time eager and replayed from a CUDA graph, the host time of the eager launches,
bytes moved, the fraction of the copy ceiling measured in this run, and the implied
latent/explicit decode-throughput ratio t_decode / (t_decode + t_step) against the Rio decode
step at the roofline (TP 8: 1.38 ms H100, 0.96 ms H200; TP 1: bench/roofline.py bytes / copy
bandwidth). At TP 8 the opt-ins are also timed (in a graph of 8), each on alone:
launch.COPY_LOGITS (rows with latent requests; checked first too) and launch.PDL; the table
ends with their on / off ratios.
Writes JSON and a Markdown table to $OUT (or the current directory).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import torch
from triton.testing import do_bench

from rio_kernels.benchmark import copy_ceiling_gbs, flag_set
from rio_kernels.swir_step import launch, mix_ref
from rio_kernels.swir_step.layout import FLOAT_COL, INT_COL, LATENT, STAT_FIELDS
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.reference import SlotState, swir_step
from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.reasoning.tokens import ReasoningTokens

V, H, SLOTS, TP8 = 248_320, 4096, 256, 8
TOKENS = ReasoningTokens(think_id=248068, think_end_id=248069, eos_id=248044, newline_id=198,
                         math_ids=frozenset(range(15, 25)), convergence_ids=(248069,),
                         termination_ids=(248069, 271, 785, 1590, 4226, 374))
DECODE_MS_TP8 = {"H100": 1.38, "H200": 0.96}  # bench/roofline.py at TP 8 (shared GPU_NOTES.md)
MIXES = ("explicit", "latent", "half")


def decode_ms(name: str, tp: int, ceiling_gbs: float) -> float:
    """The Rio decode step at the roofline on this device: TP 8 from the notes, TP 1 from the
    bytes bench/roofline.py counts (context 4096) over the copy ceiling measured here."""
    if tp == TP8:
        return DECODE_MS_TP8["H200" if "H200" in name else "H100"]
    from bench.roofline import decode_step_bytes

    path = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "rio_config.json")
    with open(path) as f:
        cfg = json.load(f)
    return sum(decode_step_bytes(cfg, 4096).values()) / (ceiling_gbs * 1e9) * 1e3


def spec_of(latent: bool) -> ReasoningSpec:
    """A row's request: latent, or switch with a window it never reaches; no math tokens."""
    if latent:
        return ReasoningSpec(mode="latent", math_tokens_explicit=False)
    return ReasoningSpec(mode="switch", window=1 << 24, math_tokens_explicit=False)


def build(B: int, mix: str, table: torch.Tensor, v_start: int, v_len: int, device):
    """A DeviceStep whose first B slots hold the row mix, one step in (so no first-step blend)."""
    special = torch.randn(3, H, device=device, dtype=table.dtype) * 0.02
    step = DeviceStep(SLOTS, TOKENS, V, table, v_start, v_len, special)
    slots = list(range(B))
    latent = [mix == "latent" or (mix == "half" and i % 2 == 0) for i in slots]
    step.reset(slots, [spec_of(lat) for lat in latent], [1 << 20] * B)
    ints = step.state.ints
    ints[:B, INT_COL["step"]] = 5
    ints[:B, INT_COL["explicit"]] = torch.tensor([0 if lat else 1 for lat in latent],
                                                 dtype=torch.int32)
    return step, torch.tensor(slots, device=device)


# SlotState fields held in the ints table under the same name; the statistics are the rest.
STATE_INTS = ("explicit", "stay", "switches", "locked", "closed", "step", "queue_locks",
              "answer_budget", "cold_count")
_CPU_TABLE: dict[int, torch.Tensor] = {}


def check_columns() -> torch.Tensor:
    """Hidden columns the reference computes: all at small H; at Rio's, every 61st (one or more
    in each 64-wide block, at varying offsets): a full-width CPU mixture per row costs seconds."""
    return torch.arange(H) if H <= 256 else torch.arange(0, H, 61)


def slot_state(ints: torch.Tensor, floats: torch.Tensor) -> SlotState:
    """ints: [NI], floats: [NF] one slot's device state (nothing queued) -> the reference's."""
    assert ints[INT_COL["queue_pos"]] >= ints[INT_COL["queue_len"]], "an injection is queued"
    st = SlotState(h_ref=float(floats[FLOAT_COL["h_ref"]]),
                   **{n: type(getattr(SlotState(), n))(ints[INT_COL[n]]) for n in STATE_INTS})
    st.stats = {n: type(v)(ints[INT_COL[n]]) for n, v in st.stats.items()}
    return st


def check(step: DeviceStep, logits, rows, slots, tokens, table, v_start) -> None:
    """One step against the single-request reference on the CPU, row by row (fp32, the shard's
    rows of the table, `check_columns` of the next inputs; all columns against the fp32
    mixture `mix_ref`, which a latent row's next input is here: no first step, no switch); the
    other slots' state unchanged."""
    ints, floats = step.state.ints.cpu().clone(), step.state.floats.cpu().clone()  # before
    cols = check_columns()
    key = table.shape[0]
    if key not in _CPU_TABLE:
        _CPU_TABLE.clear()
        _CPU_TABLE[key] = torch.zeros(V, len(cols))
        _CPU_TABLE[key][v_start:v_start + key] = table[:, cols.to(table.device)].float().cpu()
    cpu_table = _CPU_TABLE[key]  # [V, C]
    toks = tokens.clone()
    pre = step.pre(logits, rows, slots)
    step.post(pre, toks)
    z = logits.cpu().to(table.dtype).float()  # [B, V]: the values the kernels read
    use = step.tables.use.bool().cpu()
    pending = step.tables.pending.float().cpu()  # [S, H]
    mixes = mix_ref(logits[rows], table, v_start, table.shape[0]).cpu()  # [R, H]
    want_ints, want_floats = ints.clone(), floats.clone()
    for i, (row, slot) in enumerate(zip(rows.tolist(), slots.tolist())):
        st = slot_state(ints[slot], floats[slot])
        spec = spec_of(int(ints[slot, INT_COL["kind"]]) == LATENT)
        ref = swir_step(st, z[row], int(tokens[row]), cpu_table, TOKENS, spec, 1 << 20)
        assert int(toks[row]) == ref.token, f"emitted tokens differ (slot {slot})"
        assert bool(use[slot]) == ref.is_latent, f"soft-input rows differ (slot {slot})"
        if ref.is_latent:
            for got, want in ((pending[slot, cols], ref.embed), (pending[slot], mixes[i])):
                want = want.to(table.dtype).float()
                err = (got - want).abs().max().item()
                scale = want.abs().max().item()
                assert err <= 2e-2 * scale + 1e-6, f"next inputs differ by {err} (scale {scale})"
        for name in STATE_INTS:
            want_ints[slot, INT_COL[name]] = int(getattr(st, name))
        for name in STAT_FIELDS:
            want_ints[slot, INT_COL[name]] = int(st.stats[name])
        want_floats[slot, FLOAT_COL["h_ref"]] = st.h_ref
    assert torch.equal(step.state.ints.cpu(), want_ints), "state differs"
    torch.testing.assert_close(step.state.floats.cpu(), want_floats, atol=1e-4, rtol=1e-5,
                               msg="state differs (floats)")


def measure(B: int, mix: str, tp: int, full_table: torch.Tensor, ceiling: float, name: str):
    dev = full_table.device
    v_len = V // tp if tp > 1 else V
    v_start = 0
    table = full_table[v_start:v_start + v_len]
    step, slots = build(B, mix, table, v_start, v_len, dev)
    logits = torch.randn(B, V, device=dev) * 4  # fp32, as SGLang's
    rows = torch.arange(B, device=dev)
    tokens = torch.randint(100, 1000, (B,), device=dev)
    if B in (1, 64) and mix == "half":  # a CPU check costs seconds at these shapes
        check(step, logits, rows, slots, tokens, table, v_start)
        if tp == TP8:  # where COPY_LOGITS is timed
            opt_in("COPY_LOGITS", check, build(B, mix, table, v_start, v_len, dev)[0],
                   logits, rows, slots, tokens, table, v_start)

    run = functools.partial(_whole_step, step, logits, rows, slots, tokens)

    eager_ms, host_us = eager_and_host(run)
    graph_ms = graphed_ms(run)
    # inside a larger graph (SGLang's decode graph) the replay's own launch is shared: the step's
    # marginal time is that of 8 steps captured in one graph, over 8
    graph8_ms = graphed_ms(_repeat(run, n=8)) / 8
    n_latent = {"explicit": 0, "latent": B, "half": (B + 1) // 2}[mix]
    # the opt-ins (off by default) at the shape, TP 8: a fresh step each, same inputs
    flags = (("COPY_LOGITS",) if n_latent else ()) + ("PDL",) if tp == TP8 else ()
    opt8_ms = {}
    for flag in flags:
        ms = opt_in(flag, graphed_ms, _repeat(functools.partial(
            _whole_step, build(B, mix, table, v_start, v_len, dev)[0], logits, rows, slots,
            tokens), n=8))
        if ms is not None:
            opt8_ms[flag] = ms / 8
    nbytes = B * V * 4 + (v_len * H * 2 if n_latent else 0)
    dec = decode_ms(name, tp, ceiling)
    journal_ms, journal_host_us = journal_cost(step, slots)
    return {"B": B, "mix": mix, "tp": tp, "eager_ms": eager_ms, "graph_ms": graph_ms,
            "graph8_ms": graph8_ms, "opt8_ms": opt8_ms,
            "host_us": host_us, "bytes": nbytes,
            "fraction": nbytes / (graph_ms * 1e-3) / (ceiling * 1e9),
            "decode_ms": dec, "latent_over_explicit": dec / (dec + graph_ms),
            "journal_ms": journal_ms, "journal_host_us": journal_host_us,
            "latent_over_explicit_journal": dec / (dec + graph_ms + journal_ms)}


def journal_cost(step: DeviceStep, slots: torch.Tensor) -> tuple[float, float]:
    """(device ms, host µs) per step of the runtime's journal (rio_sglang/runtime/journal.py),
    which runs after the sampler, outside the decode graph: the rows' states and next inputs
    copied to pinned host memory on a side stream, filed when done (what exact resumption after
    a retraction costs every latent step)."""
    from types import SimpleNamespace

    from rio_sglang.runtime.journal import Journal

    journal = Journal(slots.device, 256 << 20)
    records = [SimpleNamespace(closed=False, trajectory=None) for _ in range(len(slots))]

    def run():
        journal.capture(records, step.state_rows(slots), step.tables.pending.index_select(0, slots))
        journal.drain()

    timed = eager_and_host(run)
    journal.drain(wait=True)
    return timed


def eager_and_host(run) -> tuple[float, float]:
    """(device ms per call, median of do_bench; host µs per call over 50 calls), the device idle
    before and after the host loop."""
    ms = do_bench(run, return_mode="median")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        run()
    host_us = (time.perf_counter() - t0) / 50 * 1e6
    torch.cuda.synchronize()
    return ms, host_us


def with_flag(flag: str, fn, *args):
    """fn(*args) with the opt-in launch.<flag> on: COPY_LOGITS (the mixture reads the stats
    pass's rounded copy of the logits) or PDL (the mixture's dependent launch)."""
    with flag_set(launch, flag, True):
        return fn(*args)


_BROKEN: set[str] = set()  # opt-ins that failed a check or a launch in this run


def opt_in(flag: str, fn, *args):
    """with_flag(flag, fn, *args), or None where the opt-in failed its check or raised (reported
    once, then skipped): an opt-in must not cost the run its table."""
    if flag in _BROKEN:
        return None
    try:
        return with_flag(flag, fn, *args)
    except Exception:  # noqa: BLE001 (reported; the default path's rows go on)
        import traceback

        traceback.print_exc()
        print(f"{flag}: FAILED (wrong or refused), not timed further", flush=True)
        _BROKEN.add(flag)
        return None


def graphed_ms(fn) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return do_bench(graph.replay, return_mode="median")


def _whole_step(step: DeviceStep, logits, rows, slots, tokens) -> None:
    step.post(step.pre(logits, rows, slots), tokens.clone())


def _repeat(fn, *args, n: int = 3):
    return lambda: [fn(*args) for _ in range(n)]


def markdown(rows: list[dict], name: str, ceiling: float) -> str:
    tiles = ", ".join(f"R <= {k}: {v}" for k, v in launch.GPU_TILES.items())
    tiles += "; stats: " + ", ".join(f"R <= {k}: {v}" for k, v in launch.STATS_TILES.items())
    out = [f"device {name}, copy ceiling {ceiling:.0f} GB/s, torch {torch.__version__}",
           f"mixture tiles: {tiles}", "",
           ("| TP | B | rows | graph µs | in a graph of 8, µs/step | eager µs | host µs | MB | "
            "fraction | latent/explicit | journal µs (host µs) | latent/explicit with it |"),
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['tp']} | {r['B']} | {r['mix']} | {r['graph_ms'] * 1e3:.1f} | "
                   f"{r['graph8_ms'] * 1e3:.1f} | "
                   f"{r['eager_ms'] * 1e3:.1f} | {r['host_us']:.0f} | {r['bytes'] / 1e6:.1f} | "
                   f"{r['fraction']:.2f} | {r['latent_over_explicit']:.3f} | "
                   f"{r['journal_ms'] * 1e3:.1f} ({r['journal_host_us']:.0f}) | "
                   f"{r['latent_over_explicit_journal']:.3f} |")
    out += [""] + [f"{flag} on / off, TP {r['tp']} B {r['B']} {r['mix']}, in a graph of 8: "
                   f"{ms * 1e3:.1f} / {r['graph8_ms'] * 1e3:.1f} µs = {ms / r['graph8_ms']:.3f}"
                   for r in rows for flag, ms in r.get("opt8_ms", {}).items()]
    if _BROKEN:
        out.append(f"opt-ins FAILED (wrong or refused), not timed: {', '.join(sorted(_BROKEN))}")
    return "\n".join(out)


def _guarded(fn, *args) -> list[dict]:
    """A profiling or tuning stage that fails prints why and leaves the table to be measured
    (with the committed tiles): one GPU session is all there is."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 (reported, and the run goes on)
        import traceback

        traceback.print_exc()
        print(f"{fn.__name__}: FAILED, the committed tiles stay", flush=True)
        return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--dry-run" in argv:  # CPU: tiny shapes under the Triton interpreter, no timing claims
        return dry_run()
    torch.manual_seed(0)
    name = torch.cuda.get_device_name()
    ceiling = copy_ceiling_gbs()
    print(f"device {name}, copy ceiling {ceiling:.0f} GB/s", flush=True)
    table = (torch.randn(V, H, device="cuda") * 0.02).to(torch.bfloat16)
    from rio_kernels.swir_step import tune

    split = _guarded(tune.parts, table) if "--parts" in argv else []
    tuned = _guarded(tune.sweep_stats, ceiling) + _guarded(tune.sweep, table, ceiling) \
        if "--sweep" in argv else []
    rows = []
    for tp in (() if "--no-table" in argv else (TP8, 1)):
        for B in (1, 8, 32, 64):
            for mix in MIXES:
                rows.append(measure(B, mix, tp, table, ceiling, name))
                r = rows[-1]
                opt = "".join(f" {flag} on {ms * 1e3:.1f} us/step"
                              for flag, ms in r["opt8_ms"].items())
                print(f"tp {tp} B {B:>2} {mix:<8} graph {r['graph_ms'] * 1e3:8.1f} us "
                      f"x8 {r['graph8_ms'] * 1e3:8.1f} us/step "
                      f"eager {r['eager_ms'] * 1e3:8.1f} us host {r['host_us']:6.0f} us "
                      f"frac {r['fraction']:.2f} ratio {r['latent_over_explicit']:.3f}{opt}",
                      flush=True)
                save(rows, name, ceiling, tuned, split)  # a run cut short keeps its rows
    print(markdown(rows, name, ceiling))
    return 0


def save(rows: list[dict], name: str, ceiling: float, tuned: list[dict], split: list[dict]):
    """$OUT (or .)/reasoning_step.json and .md: the rows so far, the sweep, the parts, tiles."""
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "reasoning_step.json"), "w") as f:
        json.dump({"device": name, "copy_gbs": ceiling, "rows": rows, "sweep": tuned,
                   "parts": split, "broken": sorted(_BROKEN),
                   "tiles": {k: v.__dict__ for k, v in launch.GPU_TILES.items()},
                   "stats_tiles": {k: v.__dict__ for k, v in launch.STATS_TILES.items()}}, f,
                  indent=1)
    with open(os.path.join(out, "reasoning_step.md"), "w") as f:
        f.write(markdown(rows, name, ceiling) + "\n")


def dry_run() -> int:
    """The checks of every configuration at V=1,000, H=64 on the CPU (TRITON_INTERPRET=1)."""
    global V, H
    V, H = 1000, 64
    table = (torch.randn(V, H) * 0.02).to(torch.float16)
    for tp in (TP8, 1):
        for B in (1, 8):
            for mix in MIXES:
                v_len = V // tp if tp > 1 else V
                step, slots = build(B, mix, table[:v_len], 0, v_len, table.device)
                logits = torch.randn(B, V) * 4
                tokens = torch.randint(100, 900, (B,))
                check(step, logits, torch.arange(B), slots, tokens, table[:v_len], 0)
                step = build(B, mix, table[:v_len], 0, v_len, table.device)[0]
                with_flag("COPY_LOGITS", check, step, logits, torch.arange(B), slots, tokens,
                          table[:v_len], 0)
                print(f"dry run tp {tp} B {B} {mix}: outputs equal the single-request reference "
                      "(COPY_LOGITS off and on)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

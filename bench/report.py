"""The benchmark report: ratios and targets from the rows, a Markdown rendering, and the one-line
summary that bench/RESULTS.md collects. Called by bench/serve_bench.py."""

from __future__ import annotations

FIGURES = ("output_tok_s", "ttft_p50_ms", "itl_p50_ms", "itl_p99_ms")
# The targets: ours against stock, latent and switch against explicit, decode roofline.
TARGETS = {"ours_over_stock": 1.0, "latent_over_explicit": 0.95, "switch_over_explicit": 0.95,
           "roofline_fraction": 0.70}


def _row(rows: list[dict], server: str, mode: str | None, c: int) -> dict | None:
    key = (server, mode, c)
    return next((r for r in rows if (r["server"], r["mode"], r["concurrency"]) == key), None)


def ratios(rows: list[dict], concurrencies) -> dict[str, dict[str, float]]:
    """Output tokens/s quotients per concurrency, for the pairs that were both measured."""
    pairs = {"ours_over_stock": (("ours", None), ("stock", None)),
             "latent_over_explicit": (("ours", "latent"), ("ours", "explicit")),
             "switch_over_explicit": (("ours", "switch"), ("ours", "explicit"))}
    out = {}
    for name, (top, bottom) in pairs.items():
        got = {}
        for c in concurrencies:
            a, b = _row(rows, *top, c), _row(rows, *bottom, c)
            if a and b:
                got[str(c)] = a["output_tok_s"] / b["output_tok_s"]
        out[name] = got
    return out


def verdicts(report: dict) -> dict[str, bool | None]:
    """Each target met or missed; None where nothing was measured or on a CPU (no claim)."""
    if report["device"]["kind"] != "cuda":
        return dict.fromkeys(TARGETS)
    out = {name: (min(report["ratios"][name].values()) >= floor
                  if report["ratios"][name] else None)
           for name, floor in TARGETS.items() if name in report["ratios"]}
    ours = (report["roofline"] or {}).get("ours")
    frac = ours and ours["fraction"]
    out["roofline_fraction"] = None if frac is None else frac >= TARGETS["roofline_fraction"]
    return out


def fmt(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.3g}" if isinstance(x, float) and abs(x) < 100 else f"{x:,.0f}"


def markdown(report: dict) -> str:
    dev, work = report["device"], report["workload"]
    summary = (f"{report['date']}, commit {report['commit']}; {work['input_len']} input and "
               f"{work['output_len']} output tokens per request (`{work['dataset']}`, seed "
               f"{work['seed']}, EOS ignored); weights: {report['checkpoint']['weights']}.")
    head = ("| server | mode | client | concurrency | prompts | out tok/s | TTFT p50 ms "
            "| ITL p50 ms | ITL p99 ms | latent / explicit steps, switches |")
    lines = [f"# serve_bench: {report['checkpoint']['name']} on {dev['name']}", "", summary, "",
             head, "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        steps = r.get("reasoning")
        steps = (f"{steps['latent_steps']} / {steps['explicit_steps']}, {steps['switches']}"
                 if steps else "-")
        lines.append(f"| {r['server']} | {r['mode'] or '-'} | {r['client']} | {r['concurrency']} "
                     f"| {r['completed']} | " + " | ".join(fmt(r[f]) for f in FIGURES)
                     + f" | {steps} |")
    names = list(report["ratios"])
    lines += ["", "| concurrency | " + " | ".join(n.replace("_over_", "/") for n in names) + " |",
              "|---:|" + "---:|" * len(names)]
    for c in work["concurrency"]:
        lines.append(f"| {c} | " + " | ".join(fmt(report["ratios"][n].get(str(c)))
                                               for n in names) + " |")
    head = ("| decode roofline, concurrency 1 | context | bytes/step | step ms (ITL p50) "
            "| achieved GB/s | device GB/s | fraction |")
    lines += ["", head, "|---|---:|---:|---:|---:|---:|---:|"]
    for server, r in (report["roofline"] or {}).items():
        lines.append(f"| {server} | {r['context_tokens']} | {r['bytes_per_step']:,} "
                     f"| {fmt(r['step_ms'])} | {fmt(r['achieved_gbs'])} "
                     f"| {fmt(dev['bandwidth_gbs'])} | {fmt(r['fraction'])} |")
    met = report["targets"]
    lines += ["", "Targets: " + ", ".join(
        f"{n} >= {TARGETS[n]}: " + {True: "met", False: "MISSED", None: "no claim"}[met.get(n)]
        for n in TARGETS) + (f" ({dev['note']})" if dev.get("note") else "")]
    return "\n".join(lines) + "\n"


def results_line(report: dict) -> str:
    """One row of bench/RESULTS.md's table."""
    def per_c(name: str) -> str:
        got = report["ratios"].get(name) or {}
        return " ".join(f"c{c} {fmt(v)}" for c, v in got.items()) or "n/a"

    ours = (report["roofline"] or {}).get("ours") or {}
    return (f"| {report['device']['name']} | {report['date']} | {report['commit']} "
            f"| {report['checkpoint']['name']} | {per_c('ours_over_stock')} "
            f"| {per_c('latent_over_explicit')} | {per_c('switch_over_explicit')} "
            f"| {fmt(ours.get('fraction'))} |")

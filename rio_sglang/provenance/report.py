"""Summarise a `Comparison` (blend.py): global alpha, verdict, per layer/component groups, and
write it as JSON and Markdown (the PNG is plot.py's). Called by `__main__`."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from .blend import Comparison, TensorResult
from .fit import BlendFit

MD_LIST_LIMIT = 200  # longer lists are cut in the Markdown (the JSON keeps every name)


def _median(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else math.nan


def _verdict(label: str, share: float, min_share: float) -> str:
    return label if share >= min_share else ("PARTIAL " + label) if share >= 0.5 else "NO " + label


def _blend_check(r: TensorResult, g: float, alpha_tol: float, max_residual: float) -> str | None:
    """Why tensor `r` is not explained by the global blend g*A + (1-g)*B, or None if it is."""
    f: BlendFit = r.fit
    if f.parents_equal:
        return None if f.child_equals_parents else "parents are equal here and the child differs"
    if not math.isfinite(f.alpha):
        return "non-finite values"
    if abs(f.alpha - g) > alpha_tol:
        return f"alpha {f.alpha:.4f} +- {f.alpha_se:.2g} (global {g:.4f})"
    if f.residual > max_residual:
        return f"residual {f.residual:.3g} of ||A-B||"
    return None


def summarize(cmp: Comparison, alpha_tol: float = 0.005, max_residual: float = 0.05,
              min_share: float = 0.9) -> dict:
    """The report as one JSON-able dict (verdict line under "verdict")."""
    two = len(cmp.infos) == 3
    if two:
        fitted = [r for r in cmp.results if not r.fit.parents_equal]
        g = _median(r.fit.alpha for r in fitted)
        why = {r.name: _blend_check(r, g, alpha_tol, max_residual) for r in cmp.results}
        med = _median(r.fit.residual for r in fitted)
        share = sum(why[r.name] is None for r in fitted) / max(len(fitted), 1)
        equal = [r for r in cmp.results if r.fit.parents_equal]
        verdict = (f"{_verdict('BLEND', share, min_share)}: consistent with a single "
                   f"{g:.3f} / {1 - g:.3f} blend for {100 * share:.1f}% of {len(fitted)} tensors; "
                   f"median residual {med:.2g} of ||A-B||")
        if equal:
            same = sum(bool(r.fit.child_equals_parents) for r in equal)
            verdict += f" ({len(equal)} tensors equal in both parents, child equal in {same})"
        head = {"global_alpha": g, "median_residual": med, "blend_share": share,
                "parents_equal": [r.name for r in equal]}
    else:
        why = {r.name: None if r.fit.distance <= max_residual
               else f"relative distance {r.fit.distance:.3g}, cosine {r.fit.cosine:.3f}"
               for r in cmp.results}
        share = sum(w is None for w in why.values()) / max(len(cmp.results), 1)
        med_d = _median(r.fit.distance for r in cmp.results)
        med_c = _median(r.fit.cosine for r in cmp.results)
        verdict = (f"{_verdict('CLOSE', share, min_share)}: {100 * share:.1f}% of "
                   f"{len(cmp.results)} tensors within relative distance {max_residual} of the "
                   f"parent; median relative distance {med_d:.3g}, median cosine {med_c:.4f}")
        head = {"median_distance": med_d, "median_cosine": med_c, "close_share": share}
    return {
        "verdict": verdict,
        **head,
        "checkpoints": {role: {"path": str(i.path), "architecture": i.architecture,
                               "tensors": i.tensors, "shards": i.shards, "bytes": i.total_bytes,
                               "fingerprint": i.fingerprint}
                        for role, i in zip(cmp.roles, cmp.infos)},
        "settings": {**cmp.settings, "alpha_tol": alpha_tol, "max_residual": max_residual,
                     "min_share": min_share},
        "disagreeing": [{"name": n, "why": w} for n, w in why.items() if w is not None],
        "missing": cmp.missing,
        "mismatched": cmp.mismatched,
        "groups": _groups(cmp.results, why),
        "tensors": [{"name": r.name, "layer": r.layer, "component": r.component,
                     "shape": list(r.shape), "dtypes": list(r.dtypes), **vars(r.fit)}
                    for r in cmp.results],
        "bytes_read": cmp.bytes_read,
        "seconds": cmp.seconds,
    }


def _groups(results: list[TensorResult], why: dict) -> list[dict]:
    """Per (layer, component): tensor count, disagreeing count, median / min / max of the fit."""
    by: dict = {}
    for r in results:
        by.setdefault((r.layer, r.component), []).append(r)
    out = []
    for (layer, component), rs in sorted(by.items(), key=lambda kv: (kv[0][0] is None,
                                                                       kv[0][0] or 0, kv[0][1])):
        key = "alpha" if isinstance(rs[0].fit, BlendFit) else "cosine"
        vals = [getattr(r.fit, key) for r in rs]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        out.append({"layer": layer, "component": component, "tensors": len(rs),
                    "disagreeing": sum(why[r.name] is not None for r in rs), "value": key,
                    "median": _median(vals), "min": min(vals, default=math.nan),
                    "max": max(vals, default=math.nan)})
    return out


def write_json(summary: dict, path: Path) -> None:
    # NaN and infinity become null: strict JSON readers reject them.
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    path.write_text(json.dumps(clean(summary), indent=1) + "\n")


def _cut(rows: list[str]) -> list[str]:
    extra = len(rows) - MD_LIST_LIMIT
    return rows[:MD_LIST_LIMIT] + ([f"- ... {extra} more in the JSON report"] if extra > 0 else [])


def markdown(summary: dict) -> str:
    """The report for people: verdict, fingerprints, groups, then every listed tensor."""
    kind = "blend fit" if "global_alpha" in summary else "distance to one parent"
    lines = [f"# Checkpoint provenance: {kind}", "", f"**{summary['verdict']}**", "",
             "| role | path | architecture | tensors | bytes | fingerprint (config + index) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for role, c in summary["checkpoints"].items():
        lines.append(f"| {role} | `{c['path']}` | {c['architecture']} | {c['tensors']} | "
                     f"{c['bytes']} | `{c['fingerprint'][:16]}` |")
    gb = summary["bytes_read"] / 1e9
    lines += ["", f"Read {gb:.3f} GB in {summary['seconds']:.1f} s; settings: "
              + ", ".join(f"{k}={v}" for k, v in summary["settings"].items()), "",
              "## Per layer and component", "",
              "| layer | component | tensors | disagreeing | value | median | min | max |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in summary["groups"]:
        layer = "-" if g["layer"] is None else g["layer"]
        nums = " | ".join("-" if math.isnan(g[k]) else f"{g[k]:.4f}" for k in ("median", "min", "max"))
        lines.append(f"| {layer} | {g['component']} | {g['tensors']} | {g['disagreeing']} | "
                     f"{g['value']} | {nums} |")
    sections = (
        ("Tensors that disagree", [f"- `{d['name']}`: {d['why']}" for d in summary["disagreeing"]]),
        ("Missing tensors", [f"- `{m['name']}`: only in {', '.join(m['present_in'])}"
                             for m in summary["missing"]]),
        ("Mismatched tensors", [
            f"- `{m['name']}`: {m['what']} ("
            + ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("name", "what", "fitted"))
            + ("; fitted anyway" if m["fitted"] else "; skipped") + ")"
            for m in summary["mismatched"]]),
    )
    for title, rows in sections:
        lines += ["", f"## {title} ({len(rows)})", ""] + (_cut(rows) or ["none"])
    return "\n".join(lines) + "\n"

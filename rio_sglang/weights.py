"""The strict loader: checkpoint tensors through the tensor table (tensor_table.py) into our
parameters, raising once with every missing, unexpected or wrongly shaped tensor.

Called by the models' `load_weights`. Read backwards, the table's rows list the checkpoint
tensors each parameter of this rank needs (`expected`), so loading fails naming every missing
tensor by its checkpoint key beside the parameter it would fill, and every unexpected or wrongly
shaped one by its key. Tensors of another pipeline stage (`elsewhere`) or expert-parallel rank
(`ExpertStore.load_expert`) are left to it. No SGLang import here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from rio_sglang.tensor_table import (
    EMBED,
    MTP_RULES,
    RULES,
    SKIPPED,
    Row,
    first_stage,
    mtp_name,
    stage_of,
)

__all__ = ["MTP_RULES", "RULES", "WeightLoadError", "elsewhere", "expected", "load_checkpoint",
           "mtp_name"]
log = logging.getLogger(__name__)


class WeightLoadError(RuntimeError):
    """Raised with every problem at once: missing tensors as `<parameter> needs <checkpoint
    key>`, unexpected ones by key, wrongly shaped ones as `<key>: <why> (fills <parameter>)`."""


def elsewhere(model, name: str) -> bool:
    """True for a checkpoint tensor another pipeline stage loads: a layer outside this stage's
    range, the vision tower off the first stage (images are embedded there; SGLang leaves later
    stages' vision tower partly unbuilt), the final norm and lm_head off the last. (Every stage
    reads the embedding: see `tensor_table._embed`.)"""
    text = getattr(model, "model", None)
    if text is None or not hasattr(text, "owns_layer") or name == EMBED.source:
        return False
    stage = stage_of(name)
    if stage == "first":
        return not text.pp_group.is_first_rank
    if stage == "last":
        return not text.pp_group.is_last_rank
    if isinstance(stage, int):
        return stage < model.config.num_hidden_layers and not text.owns_layer(stage)
    return False


def expected(model, rules: tuple[Row, ...], layout: str | None) -> tuple[dict, list[str]]:
    """({checkpoint key: the parameter it fills} for every parameter this rank holds, the
    parameters no row fills). Each parameter is read by the first row whose target it is,
    among those of the checkpoint's expert `layout` (all rows if it showed none)."""
    rows = [r for r in rules if layout is None or r.layout in (None, layout)]
    keys, unfilled = {}, []
    for name, _ in model.named_parameters():
        if name.startswith("visual.") and not first_stage(model):
            continue  # loaded by the first stage only (see `elsewhere`)
        row, m = next(((r, m) for r in rows if (m := r.target_pattern.match(name))), (None, None))
        if row is None:
            unfilled.append(f"{name} (no checkpoint tensor fills it)")
            continue
        keys.update(dict.fromkeys(row.keys(model, m.groupdict()), name))
    return keys, unfilled


def _first(items: list, n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_checkpoint(model, weights: Iterable, rules: tuple[Row, ...] = RULES,
                    reads: Callable[[str], str | None] | None = None,
                    label: str = "the model") -> int:
    """Load every (key, tensor); raise WeightLoadError listing all problems. Returns count.

    `reads` (the MTP draft's `mtp_name`) is None for a tensor another model loads."""
    params = dict(model.named_parameters())
    kept, misshapen = set(), set()
    layouts: dict[str, set] = {}  # expert layout -> the parameters its tensors filled
    unexpected, wrong, twice, skipped, n = [], [], [], [], 0
    for name, w in weights:
        if reads is None and SKIPPED.match(name):
            skipped.append(name)
        if (reads(name) is None if reads else SKIPPED.match(name)) or elsewhere(model, name):
            continue
        row, m = next(((r, m) for r in rules if (m := r.pattern.match(name))), (None, None))
        if row is None:
            unexpected.append(name)
            continue
        target = row.target.format(**m.groupdict())
        try:
            here = row.fill(model, params.get(target), m.groupdict(), w, name)
        except KeyError:
            unexpected.append(name)
            continue
        except (ValueError, AssertionError, RuntimeError, IndexError) as e:
            why = str(e) if name in str(e) else f"{name}: {e}"
            wrong.append(f"{why} (fills {target})")
            misshapen.add(name)
            continue
        n += 1
        if row.layout is not None:
            layouts.setdefault(row.layout, set()).add(target)
        if here is False:
            continue
        if name in kept:
            twice.append(name)
        kept.add(name)
    # The checkpoint's expert layout fills most parameters; the other's tensors are unexpected.
    layout = max(layouts, key=lambda k: len(layouts[k]), default=None)
    need, unfilled = expected(model, rules, layout)
    missing = sorted(f"{p} needs {k}" for k, p in need.items()
                     if k not in kept and k not in misshapen) + unfilled
    unexpected += sorted(kept - set(need))
    problems = {"missing": missing, "unexpected": unexpected, "wrongly shaped": wrong,
                "loaded twice": twice}
    if any(problems.values()):
        raise WeightLoadError(f"checkpoint does not match {label}; " + "; ".join(
            f"{len(v)} {k}: {_first(v)}" for k, v in problems.items() if v))
    if skipped:
        log.warning("%d mtp.* tensors left to the MTP draft model (loaded only with "
                    "--speculative-algorithm NEXTN)", len(skipped))
    return n

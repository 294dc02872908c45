"""SwiReasoning on SGLang's /metrics (`--enable-metrics` only): what a request's statistics say.

Imported only by a tokenizer manager whose `enable_metrics` is set, after SGLang has pointed
prometheus_client at its multiprocess directory, so that SGLang's /metrics serves these beside
its own. Counted from the statistics a finished request already returns (`output.py`) and from
spec refusals (`validate.py`): nothing runs per decode step.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram

from rio_sglang.reasoning.spec import MODES

log = logging.getLogger(__name__)
PREFIX = "rio_reasoning_"
STEP_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
SWITCH_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128)

REQUESTS = Counter(f"{PREFIX}requests", "Requests that ended with reasoning statistics, by mode "
                   "and whether the spec was the server default.", ["mode", "from_default"])
LATENT_STEPS = Counter(f"{PREFIX}latent_steps", "Decode steps fed a soft (latent) input.")
EXPLICIT_STEPS = Counter(f"{PREFIX}explicit_steps", "Decode steps fed the sampled token.")
LATENT_PER_REQUEST = Histogram(f"{PREFIX}latent_steps_per_request",
                               "Latent steps of one request.", buckets=STEP_BUCKETS)
SWITCHES_PER_REQUEST = Histogram(f"{PREFIX}switches_per_request",
                                 "Latent-to-explicit switches of one request.",
                                 buckets=SWITCH_BUCKETS)
CONVERGENCE = Counter(f"{PREFIX}injected_convergence", "Requests whose switch limit injected "
                      "the convergence text.")
TERMINATION = Counter(f"{PREFIX}injected_termination", "Requests whose switch limit injected "
                      "the termination text and an answer budget.")
FORCED_THINK_END = Counter(f"{PREFIX}forced_think_end", "Requests whose thinking budget or "
                           "cold stop injected </think>.")
REFUSED = Counter(f"{PREFIX}refused", "Requests refused by reasoning-spec validation (HTTP "
                  "400), by the field named.", ["field"])
ABORTED_MID_LATENT = Counter(f"{PREFIX}aborted_mid_latent", "Aborted latent / switch requests "
                             "whose last step was latent.")


def observe_finished(stats: dict, finish_reason: dict | None) -> None:
    """One request's final statistics (`meta_info["rio_reasoning"]`)."""
    spec = stats.get("spec") or {}
    mode = spec.get("mode") if spec.get("mode") in MODES else "explicit"
    REQUESTS.labels(mode=mode, from_default=str(bool(stats.get("from_default"))).lower()).inc()
    LATENT_STEPS.inc(stats["latent_steps"])
    EXPLICIT_STEPS.inc(stats["explicit_steps"])
    LATENT_PER_REQUEST.observe(stats["latent_steps"])
    SWITCHES_PER_REQUEST.observe(stats["switches"])
    for flag, counter in (("injected_convergence", CONVERGENCE),
                          ("injected_termination", TERMINATION),
                          ("forced_think_end", FORCED_THINK_END)):
        if stats[flag]:
            counter.inc()
    aborted = isinstance(finish_reason, dict) and finish_reason.get("type") == "abort"
    if aborted and mode != "explicit" and stats.get("modes", "").endswith("L"):
        ABORTED_MID_LATENT.inc()


def observe_refused(field: str) -> None:
    REFUSED.labels(field=field).inc()

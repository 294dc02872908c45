"""Reasoning metrics without a server (the server test: tests/test_launch.py,
`assert_metrics_add_up`): the Grafana dashboard is a well-formed dashboard whose queries name
our series, a request's statistics move exactly the series they should, nothing loads the
metrics module unless SGLang's metrics are on, and the per-request debug line."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "launch" / "grafana" / "rio-reasoning.json"


def test_the_dashboard_is_grafana_json_naming_our_series():
    from rio_sglang.runtime import metrics

    dash = json.loads(GRAFANA.read_text())
    assert isinstance(dash["schemaVersion"], int) and dash["title"] and dash["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    ours = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    for panel in dash["panels"]:
        assert panel["type"] == "timeseries" and set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in
                                                          range(len(panel["targets"]))]
        for target in panel["targets"]:
            for name in re.findall(r"\brio_reasoning_\w+", target["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert base in ours, name
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    assert {"latent_steps", "switches_per_request", "injected_convergence", "refused"} <= {
        m.removeprefix("rio_reasoning_") for m in ours if m.removeprefix("rio_reasoning_") in exprs}
    assert "sglang:generation_tokens_total" in exprs  # SGLang's own throughput beside ours


def sample(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or None) or 0.0


STATS = {"latent_steps": 5, "explicit_steps": 3, "switches": 2, "injected_convergence": True,
         "injected_termination": False, "forced_think_end": True, "modes": "LLELLLEL",
         "spec": {"mode": "switch"}, "from_default": True}
# finish reason, the series that move and by how much
OBSERVED = [
    ({"type": "length"}, {"aborted_mid_latent_total": 0}),
    ({"type": "abort"}, {"aborted_mid_latent_total": 1}),
]


@pytest.mark.parametrize("finish,moves", OBSERVED, ids=["length", "abort"])
def test_one_request_moves_its_series(finish, moves):
    from rio_sglang.runtime import metrics

    names = ["latent_steps_total", "explicit_steps_total", "injected_convergence_total",
             "injected_termination_total", "forced_think_end_total", "aborted_mid_latent_total",
             "switches_per_request_sum", "latent_steps_per_request_count"]
    before = {n: sample(f"rio_reasoning_{n}") for n in names}
    req = sample("rio_reasoning_requests_total", mode="switch", from_default="true")
    metrics.observe_finished(STATS, finish)
    got = {n: sample(f"rio_reasoning_{n}") - before[n] for n in names}
    assert got == {"latent_steps_total": 5, "explicit_steps_total": 3,
                   "injected_convergence_total": 1, "injected_termination_total": 0,
                   "forced_think_end_total": 1, "switches_per_request_sum": 2,
                   "latent_steps_per_request_count": 1, **moves}
    assert sample("rio_reasoning_requests_total", mode="switch", from_default="true") == req + 1


PROBE = """
import sys
from rio_sglang.runtime import hooks, output, validate
print("rio_sglang.runtime.metrics" in sys.modules)
"""


def test_nothing_loads_the_metrics_without_them():
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["False"]


def test_a_finished_request_is_one_debug_line(caplog):
    from rio_sglang.runtime import output

    manager = SimpleNamespace(enable_metrics=False)
    meta = {"id": "r7"}
    with caplog.at_level(logging.DEBUG, logger=output.finished_log.name):
        output.update_meta_info(lambda *a: None, manager, meta, None,
                                {output.STATS_KEY: [[STATS]]}, 0, {"type": "length"})
    assert meta[output.STATS_KEY] is STATS
    lines = [r.getMessage() for r in caplog.records if r.name == output.finished_log.name]
    assert lines == [("rio-sglang reasoning request r7 finished (length): mode switch, latent 5, "
                      "explicit 3, switches 2, convergence True, termination False, "
                      "forced </think> True")]
    caplog.clear()
    output.update_meta_info(lambda *a: None, manager, {}, None, {output.STATS_KEY: [[STATS]]},
                            0, None)
    assert not [r for r in caplog.records if r.name == output.finished_log.name]  # off: INFO

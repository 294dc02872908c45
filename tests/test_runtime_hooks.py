"""The request-side hooks in-process: spec validation errors name the field, latent modes are
refused where they cannot run (speculative decoding: tests/test_mtp.py shows the same through a
NEXTN server; a vocabulary without think tags), the slot bookkeeping that tells the runtime which
slots to reset or release, and a request that finishes or is aborted leaves no slot held."""

from __future__ import annotations

import pytest

from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.runtime import hooks, validate
from rio_sglang.runtime.journal import Journal
from rio_sglang.runtime.record import Record, admit, record_of
from rio_sglang.runtime.sampler import ReasoningRuntime

V, CONTEXT = 512, 4096


def check(spec, **kwargs):
    validate.check_reasoning({"max_new_tokens": 4, "custom_params": {"rio_reasoning": spec}},
                             V, CONTEXT, **kwargs)


# spec, error (None: accepted)
ROWS = [
    ({"mode": "switch"}, None),
    ({"mode": "explicit", "window": 0}, r"custom_params\.rio_reasoning\.window"),
    ({"mode": "latent", "alpha0": 2.0}, r"custom_params\.rio_reasoning\.alpha0"),
    ({"mode": "switch", "soft_topk": 513}, r"custom_params\.rio_reasoning\.soft_topk"),
]


@pytest.mark.parametrize("spec,error", ROWS)
def test_a_bad_spec_names_the_field(spec, error):
    if error is None:
        check(spec)
    else:
        with pytest.raises(ValueError, match=error):
            check(spec)


NO_TAGS = "the served vocabulary has no <think> token"
# what the server runs, the mode asked for, the refusal (None: served)
REFUSALS = [
    ({"speculative": "EAGLE"}, "latent", r"rio_reasoning\.mode: .*speculative decoding"),
    ({"speculative": "EAGLE"}, "switch", r"rio_reasoning\.mode: .*speculative decoding"),
    ({"speculative": "EAGLE"}, "explicit", None),
    ({"no_latent": NO_TAGS}, "latent", rf"rio_reasoning\.mode: 'latent' .*{NO_TAGS}"),
    ({"no_latent": NO_TAGS}, "switch", rf"rio_reasoning\.mode: 'switch' .*{NO_TAGS}"),
    ({"no_latent": NO_TAGS}, "explicit", None),
]


@pytest.mark.parametrize("server,mode,refusal", REFUSALS)
def test_latent_modes_refused_where_they_cannot_run(server, mode, refusal):
    if refusal is None:
        check({"mode": mode}, **server)
    else:
        with pytest.raises(ValueError, match=refusal):
            check({"mode": mode}, **server)


LAT = ReasoningSpec(mode="latent")
# Per row: a sequence of (rid, slot, spec) claims as batches show them, and per claim what the
# runtime must do: (reset the slot for the request?, slots to release first).
CLAIMS = [
    ("new latent, then its later batches",
     [("a", 1, LAT), ("a", 1, LAT)], [(True, []), (False, [])]),
    ("explicit requests own nothing",
     [("e", 1, None), ("e", 1, ReasoningSpec(mode="explicit"))], [(False, []), (False, [])]),
    ("a latent request left slot 1 without finishing: the explicit one there releases it",
     [("a", 1, LAT), ("e", 1, None), ("e", 1, None)], [(True, []), (False, [1]), (False, [])]),
    ("a latent one there instead: released, then reset for it",
     [("a", 1, LAT), ("b", 1, LAT)], [(True, []), (True, [1])]),
    ("retracted and prefilled again in slot 2: slot 1 released, slot 2 reset",
     [("a", 1, LAT), ("a", 2, LAT)], [(True, []), (True, [1])]),
    ("retracted, and slot 1 already taken by another latent request: left to it",
     [("a", 1, LAT), ("b", 1, LAT), ("a", 2, LAT)], [(True, []), (True, [1]), (True, [])]),
]


class FakeStep:
    """The device step's host side as the runtime's bookkeeping calls it."""

    def __init__(self):
        self.finished: list[int] = []

    def read_final(self, slot: int) -> dict:
        self.finished.append(slot)
        return {"latent_steps": 1, "modes": "L"}


@pytest.mark.parametrize("claims,expected", [c[1:] for c in CLAIMS], ids=[c[0] for c in CLAIMS])
def test_slot_bookkeeping(claims, expected):
    runtime = ReasoningRuntime(FakeStep(), relay_to_first_stage=False, journal=Journal("cpu", 0))
    records: dict[str, Record] = {}
    got = []
    for rid, slot, spec in claims:
        record = records.setdefault(rid, Record(rid, spec, False, runtime))
        got.append(runtime.claim(record, slot))
    assert got == expected
    last_rid, last_slot, _ = claims[-1]
    last = records[last_rid]
    if last.latent:
        assert last.slot == last_slot
        assert last.finish(4, 0)["latent_steps"] == 1 and runtime.device.finished == [last_slot]
    assert last_slot not in runtime.holders


# how the request leaves, its spec, the slots the next batch's claim releases first
LEAVES = [
    ("finished", {"mode": "latent"}, []),  # its slot freed when its statistics were read
    ("finished", {"mode": "explicit"}, []),
    ("aborted", {"mode": "latent"}, [3]),
    ("aborted", {"mode": "switch"}, [3]),
    ("aborted", {"mode": "explicit"}, []),
]


@pytest.mark.parametrize("how,spec,released", LEAVES,
                         ids=[f"{h}-{s['mode']}" for h, s, _ in LEAVES])
def test_a_request_that_leaves_holds_no_slot(how, spec, released):
    from sglang.srt.managers.schedule_batch import FINISH_LENGTH, Req
    from sglang.srt.sampling.sampling_params import SamplingParams

    from rio_sglang.runtime import output

    runtime = ReasoningRuntime(FakeStep(), relay_to_first_stage=False, journal=Journal("cpu", 0))
    req = Req("r1", "hi", [1, 2], SamplingParams(max_new_tokens=2,
                                                 custom_params={"rio_reasoning": spec}))
    record = admit(req, runtime)
    assert record_of(req) is record and admit(req, runtime) is record  # parsed once
    assert runtime.claim(record, 3)[0] == record.latent
    if how == "aborted":
        hooks.aborted(None, None, req)  # after SGLang's Scheduler._release_aborted_request
    else:  # SGLang's output streamer (ours) sends its statistics
        req.finished_reason = FINISH_LENGTH(2)
        info = output.ReasoningOutputStreamer.build_additional_customized_info(None, [req])
        assert info[output.STATS_KEY][0][0]["spec"]["mode"] == spec["mode"]
        assert runtime.device.finished == ([3] if record.latent else [])
    assert runtime.holders == {} and record.slot is None
    assert runtime.claim(Record("r2", None, False), 5) == (False, released)
    assert runtime.stale == []


def test_a_hook_that_does_not_apply_stops_the_process():
    """SGLang's registry only logs a target it cannot patch; ours stops, naming it."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    target = "sglang.srt.managers.scheduler.Scheduler.rio_no_such_method"
    try:
        with pytest.raises(hooks.HooksNotApplied, match="rio_no_such_method"):
            hooks._register([(target, "after", hooks.aborted)])
    finally:
        HookRegistry._hooks.pop(target, None)

"""The request-side hooks in-process: spec validation errors name the field, latent modes are
refused under speculative decoding (tests/test_mtp.py shows the same through a NEXTN server),
the slot bookkeeping that tells the runtime which slots to reset or release, and a request that
finishes or is aborted leaves no entry in the reasoning context."""

from __future__ import annotations

import pytest

from rio_sglang.reasoning.spec import ReasoningSpec
from rio_sglang.runtime import hooks
from rio_sglang.runtime.context import ReasoningContext, uses_latent


@pytest.fixture(scope="module")
def sampling_params():
    from sglang.srt.sampling.sampling_params import SamplingParams

    hooks._patch_verify()
    return SamplingParams


def make(sp_cls, spec):
    return sp_cls(max_new_tokens=4, custom_params={"rio_reasoning": spec})


# spec, error (None: accepted)
ROWS = [
    ({"mode": "switch"}, None),
    ({"mode": "explicit", "window": 0}, r"custom_params\.rio_reasoning\.window"),
    ({"mode": "latent", "alpha0": 2.0}, r"custom_params\.rio_reasoning\.alpha0"),
    ({"mode": "switch", "soft_topk": 513}, r"custom_params\.rio_reasoning\.soft_topk"),
]


@pytest.mark.parametrize("spec,error", ROWS)
def test_verify_names_the_field(sampling_params, spec, error):
    sp = make(sampling_params, spec)
    if error is None:
        sp.verify(512)
    else:
        with pytest.raises(ValueError, match=error):
            sp.verify(512)


# what the server runs, the mode asked for, the refusal (None: served)
REFUSALS = [
    ("_speculative_algorithm", "EAGLE", "latent", r"rio_reasoning\.mode: .*speculative decoding"),
    ("_speculative_algorithm", "EAGLE", "switch", r"rio_reasoning\.mode: .*speculative decoding"),
    ("_speculative_algorithm", "EAGLE", "explicit", None),
]


@pytest.mark.parametrize("probe,value,mode,refusal", REFUSALS)
def test_latent_modes_refused_where_they_cannot_run(sampling_params, monkeypatch, probe, value,
                                                     mode, refusal):
    monkeypatch.setattr(hooks, probe, lambda: value)
    sp = make(sampling_params, {"mode": mode})
    if refusal is None:
        sp.verify(512)
    else:
        with pytest.raises(ValueError, match=refusal):
            sp.verify(512)


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


@pytest.mark.parametrize("claims,expected", [c[1:] for c in CLAIMS], ids=[c[0] for c in CLAIMS])
def test_slot_bookkeeping(claims, expected):
    ctx = ReasoningContext()
    assert [ctx.claim(rid, slot, spec) for rid, slot, spec in claims] == expected
    last_rid, last_slot, _ = claims[-1]
    if uses_latent(claims[-1][2]):
        assert ctx.forget(last_rid).slot == last_slot
    assert last_slot not in ctx.slot_owner


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
def test_a_request_that_leaves_leaves_no_entry(monkeypatch, how, spec, released):
    from sglang.srt.managers.schedule_batch import FINISH_LENGTH, Req
    from sglang.srt.sampling.sampling_params import SamplingParams

    from rio_sglang.runtime import output

    ctx = ReasoningContext()
    monkeypatch.setattr(hooks, "CONTEXT", ctx)
    monkeypatch.setattr(output, "CONTEXT", ctx)
    req = Req("r1", "hi", [1, 2], SamplingParams(max_new_tokens=2,
                                                 custom_params={"rio_reasoning": spec}))
    assert ctx.claim(req.rid, 3, ctx.spec_of_req(req, keep=True))[0] == uses_latent(
        ctx.spec_of_req(req))
    assert req.rid in ctx.specs
    if how == "aborted":
        hooks.aborted(None, None, req)  # after SGLang's Scheduler._release_aborted_request
    else:  # SGLang's output streamer (ours) sends its statistics
        req.finished_reason = FINISH_LENGTH(2)
        info = output.ReasoningOutputStreamer.build_additional_customized_info(None, [req])
        assert info[output.STATS_KEY][0][0]["spec"]["mode"] == spec["mode"]
    assert (ctx.specs, ctx.tracked, ctx.slot_owner) == ({}, {}, {})
    assert ctx.claim("r2", 5, None) == (False, released)
    assert ctx.stale == []

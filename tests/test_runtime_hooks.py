"""The request-side hooks in-process: spec validation errors name the field, and latent modes are
refused under speculative decoding (tests/test_mtp.py shows the same through a NEXTN server)."""

from __future__ import annotations

import pytest

from rio_sglang.runtime import hooks


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

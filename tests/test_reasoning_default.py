"""The server default reasoning spec (runtime/defaults.py) without a server: which spec a
request runs with, and what the launchers refuse. Through a real server: tests/test_launch.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rio_sglang.reasoning.spec import ReasoningSpecError
from rio_sglang.runtime import defaults
from rio_sglang.runtime.record import admit

SWITCH = '{"mode": "switch", "max_switches": 2}'

# server default (RIO_REASONING_DEFAULT), the request's custom_params, mode run, from default?
EFFECTIVE = [
    (None, None, None, False),
    (None, {"rio_reasoning": {"mode": "latent"}}, "latent", False),
    (SWITCH, None, "switch", True),
    (SWITCH, {}, "switch", True),
    (SWITCH, {"other_plugin": 1}, "switch", True),
    (SWITCH, {"rio_reasoning": {"mode": "explicit"}}, "explicit", False),
    (SWITCH, {"rio_reasoning": {"mode": "latent"}}, "latent", False),
    ("", None, None, False),
]


@pytest.fixture
def server_default(monkeypatch):
    def set_default(text):
        if text is None:
            monkeypatch.delenv(defaults.ENV_NAME, raising=False)
        else:
            monkeypatch.setenv(defaults.ENV_NAME, text)
        defaults.default_spec.cache_clear()

    yield set_default
    defaults.default_spec.cache_clear()


@pytest.mark.parametrize("default,params,mode,from_default", EFFECTIVE)
def test_request_spec_else_server_default(server_default, default, params, mode, from_default):
    server_default(default)
    spec, came_from_default = defaults.effective(params)
    assert (spec and spec.mode, came_from_default) == (mode, from_default)
    # what a finished request's statistics say (its record, built at admission)
    req = SimpleNamespace(rid="r", sampling_params=SimpleNamespace(custom_params=params))
    applied = admit(req, None).finish(0, 0)
    assert applied["from_default"] is from_default
    assert applied["spec"] == (spec.to_json() if spec else None)
    if from_default:
        assert applied["spec"]["max_switches"] == 2  # the default whole, not merged


def test_a_request_spec_replaces_the_default_whole(server_default):
    server_default('{"mode": "switch", "window": 64}')
    spec, _ = defaults.effective({"rio_reasoning": {"mode": "switch"}})
    assert spec.window == 512  # the spec's own default, not the server's 64


def test_bad_request_spec_still_names_its_field(server_default):
    server_default(SWITCH)
    with pytest.raises(ReasoningSpecError, match="window"):
        defaults.effective({"rio_reasoning": {"mode": "switch", "window": 0}})


# default text, server arguments, what the refusal says
REFUSED = [
    ('{"mode": "switch", "window": 0}', (), "RIO_REASONING_DEFAULT.window: must lie in [1, 16777216], got 0"),
    ('{"mode": "switch", "bogus": 1}', (), "RIO_REASONING_DEFAULT.bogus: unknown key"),
    ('["switch"]', (), "RIO_REASONING_DEFAULT: must be a JSON object"),
    ("{mode: switch}", (), "RIO_REASONING_DEFAULT: not JSON"),
    ('{"mode": "latent"}', ("--speculative-algorithm", "NEXTN"),
     "RIO_REASONING_DEFAULT.mode: 'latent' reasoning cannot run under --speculative-algorithm"),
]


@pytest.mark.parametrize("text,argv,message", REFUSED, ids=[m.split(":")[0] for *_, m in REFUSED])
def test_launcher_check_refuses_naming_the_field(text, argv, message):
    with pytest.raises(defaults.DefaultSpecError) as e:
        defaults.check_default(text, argv)
    assert str(e.value).startswith(message)


def test_launcher_check_accepts():
    assert defaults.check_default(None) is None and defaults.check_default("  ") is None
    assert defaults.check_default('{"mode": "explicit"}', ["--speculative-algorithm", "NEXTN"])
    assert defaults.check_default(SWITCH, source="--reasoning-default").max_switches == 2

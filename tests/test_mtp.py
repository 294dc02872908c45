"""NEXTN speculative decoding with our MTP head (rio_sglang.models.qwen3_5_moe_mtp) on the CPU.

A random MTP head almost never guesses the target's next token, which would leave the draft
model untested. So the head's `fc` is solved for: given transformers' greedy continuations of a
few prompts and the target's final hidden states, fc maps each draft input
[norm(embed(o_k)) | norm(hidden that predicted o_k)] onto the output-head row of o_{k+1}
(least squares, exact for this few constraints). If our head computes what the checkpoint
says (fc on [embedding | hidden] in that order, the norms, the shared embedding and output
head, its decoder layer's residual stream), the drafts are accepted; the output must equal
transformers' greedy tokens either way.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hf_reference import (
    IMAGE_QUESTION,
    hf_greedy,
    hf_greedy_image,
    hf_model,
    server_greedy_image,
)
from one_ahead import OneAhead
from test_reasoning_server import gen
from test_strict_loading import launch_refused, rewrite

from rio_sglang.logmarks import MTP_MARK, SERVING_MARK
from rio_sglang.sglang_server import NEXTN_CPU_FLAGS, Server, ServerStartError, start_server
from rio_sglang.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.server
PROMPTS = [[17], [40, 41, 300, 7, 99], [250, 12, 480, 33, 61, 200, 8, 140, 77]]
NEW = 8


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def solve_fc(ckpt) -> torch.Tensor:
    """fc [H, 2H] that sends each (o_k, hidden predicting o_k) of the greedy runs to o_{k+1}."""
    model = hf_model(str(ckpt), torch.float32)
    embed = model.get_input_embeddings().weight
    head = model.lm_head.weight
    inputs, targets = [], []
    for prompt in PROMPTS:
        out = hf_greedy(ckpt, prompt, NEW)
        seq = torch.tensor([prompt + out])
        with torch.no_grad():
            hidden = model.model(input_ids=seq).last_hidden_state[0]  # after the final norm
        for k in range(NEW - 1):  # o_k (1-based k+1) was predicted at position len(prompt)-1+k
            x = _rms(embed[out[k]])
            y = _rms(hidden[len(prompt) - 1 + k])
            inputs.append(torch.cat([x, y]))
            targets.append(head[out[k + 1]])
    a, b = torch.stack(inputs).double(), torch.stack(targets).double()  # [n, 2H], [n, H]
    fc = torch.linalg.lstsq(a, b, driver="gelsd").solution.T  # min-norm: both halves carry it
    assert torch.allclose(a @ fc.T, b, atol=1e-6)
    return fc


def solved_checkpoint(tmp_path_factory, expert_layout: str):
    random_head = write_tiny_checkpoint(tmp_path_factory.mktemp("mtp") / "random", "tiny",
                                        seed=0, expert_layout=expert_layout, mtp=True)
    fc = solve_fc(random_head)
    solved = tmp_path_factory.mktemp("mtp") / "solved"
    rewrite(random_head, solved, lambda t: t.__setitem__("mtp.fc.weight",
                                                         fc.to(t["mtp.fc.weight"].dtype)))
    return solved


@pytest.fixture(scope="module")
def mtp_ckpt(tmp_path_factory):
    return solved_checkpoint(tmp_path_factory, "per-expert")


# name, extra flags, expert layout on disk (mtp.* too), the experts each rank's head holds
LAYOUTS = [
    ("tp1", [], "per-expert", {"0-8"}),
    ("tp2-ep2", ["--tp-size", "2", "--ep-size", "2"], "fused", {"0-4", "4-8"}),
]


THREE_STEPS = "test_three_draft_steps_keep_greedy_output"  # its server starts ahead too


@pytest.fixture(scope="module")
def nextn_starts(request, tmp_path_factory):
    def start(key):
        if key == THREE_STEPS:
            steps = ("--speculative-num-steps", "3", "--speculative-num-draft-tokens", "4")
            flags = list(NEXTN_CPU_FLAGS)
            for flag, value in zip(steps[::2], steps[1::2]):
                flags[flags.index(flag) + 1] = value
            return (start_server(request.getfixturevalue("mtp_ckpt"), extra_args=flags,
                           log_path=tmp_path_factory.mktemp("logs") / "three-steps.log"),)
        name, flags, expert_layout, _ = LAYOUTS[key]
        ckpt = (request.getfixturevalue("mtp_ckpt") if expert_layout == "per-expert"
                else solved_checkpoint(tmp_path_factory, expert_layout))
        return start_server(ckpt, extra_args=[*NEXTN_CPU_FLAGS, *flags],
                      log_path=tmp_path_factory.mktemp("logs") / f"nextn-{name}.log"), ckpt

    starts = OneAhead(request, start, "nextn_server", then=(THREE_STEPS,))
    yield starts
    starts.stop()


@pytest.fixture(scope="module", params=LAYOUTS, ids=[r[0] for r in LAYOUTS])
def nextn_server(request, nextn_starts):
    """(server, experts per rank, its checkpoint)."""
    srv, ckpt = nextn_starts.take(request.param_index)
    try:
        srv.wait_ready(timeout=600)  # requires the MTP mark as well as the target's
        yield srv, request.param[3], ckpt
    finally:
        srv.stop()


def test_drafts_of_our_mtp_head_are_accepted_and_output_is_greedy(nextn_server):
    srv, experts, ckpt = nextn_server
    held = set(re.findall(MTP_MARK + r": .* experts (\d+-\d+) on this rank", srv.log_path.read_text()))
    assert held == experts
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # one concurrent batch
        outs = list(pool.map(lambda p: gen(srv, p, None, new=NEW), PROMPTS))
    proposed = correct = 0
    for prompt, out in zip(PROMPTS, outs):
        assert out["output_ids"] == hf_greedy(ckpt, prompt, NEW)
        meta = out["meta_info"]
        proposed += meta["spec_num_proposed_drafts"]
        correct += meta["spec_num_correct_drafts"]
        # The prefill gives the first token; each verify pass one more plus its accepted drafts
        # (the last pass may overshoot max_new_tokens by its draft).
        passes = meta["spec_verify_ct"] + meta["spec_num_correct_drafts"]
        assert NEW - 1 <= passes <= NEW, meta
    assert proposed > 0 and correct >= 0.8 * proposed, (correct, proposed)


def test_image_request_under_nextn_equals_transformers(nextn_server):
    """An image prompt through the draft's multimodal path (its first step reads the target's
    multimodal embeddings): no failure, and the output stays transformers' greedy tokens."""
    srv, _, ckpt = nextn_server
    assert server_greedy_image(srv.url, NEW) == hf_greedy_image(ckpt, IMAGE_QUESTION, NEW)


def test_latent_requests_are_refused_under_nextn_and_explicit_ones_served(nextn_server):
    srv, _, _ = nextn_server
    for mode in ("latent", "switch"):
        text = str(gen(srv, PROMPTS[0], {"mode": mode}, new=NEW, status=400))
        assert "rio_reasoning.mode" in text and "speculative decoding" in text, text[:300]
    out = gen(srv, PROMPTS[0], {"mode": "explicit"}, new=NEW)
    assert out["meta_info"]["completion_tokens"] == NEW


def test_three_draft_steps_keep_greedy_output(mtp_ckpt, nextn_starts):
    """SGLang's multi-step draft decode (steps 2 and 3 draft from the head's own hidden state,
    which the solved fc was not fitted for): the output stays the target's greedy tokens."""
    (srv,) = nextn_starts.take(THREE_STEPS)
    try:
        srv.wait_ready(timeout=600)
        meta_list = []
        for prompt in PROMPTS[1:]:
            out = gen(srv, prompt, None, new=NEW)
            assert out["output_ids"] == hf_greedy(mtp_ckpt, prompt, NEW)
            meta_list.append(out["meta_info"])
    finally:
        srv.stop()
    for meta in meta_list:
        assert meta["spec_num_proposed_drafts"] == 3 * meta["spec_verify_ct"], meta
        assert meta["spec_num_correct_drafts"] >= 1, meta  # the first step is still solved


# flags, marks in the log, whether start_server accepts the server
MARK_CASES = [
    ("plain", [], [SERVING_MARK], True),
    ("nextn-our-head", list(NEXTN_CPU_FLAGS), [SERVING_MARK, MTP_MARK], True),
    ("nextn-stock-head", list(NEXTN_CPU_FLAGS), [SERVING_MARK], False),
    ("nextn-separate-draft", [*NEXTN_CPU_FLAGS, "--speculative-draft-model-path", "/d"],
     [SERVING_MARK], True),
    ("stock-target", [], [], False),
]


@pytest.mark.parametrize("flags,marks,accepted", [c[1:] for c in MARK_CASES],
                         ids=[c[0] for c in MARK_CASES])
def test_launcher_requires_our_mtp_head_when_it_drafts(tmp_path, flags, marks, accepted):
    """SGLang silently builds its own draft class when ours fails to import: the readiness
    check refuses a NEXTN server whose log lacks our head's line."""
    log = tmp_path / "server.log"
    log.write_text("".join(f"[t] {m}: ...\n" for m in marks))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    srv = Server("http://127.0.0.1:1", proc, log, ["sglang.launch_server", *flags])
    try:
        if accepted:
            srv._check_serving_class()
            assert proc.poll() is None
        else:
            with pytest.raises(ServerStartError, match="built-in class"):
                srv._check_serving_class()
    finally:
        srv.stop()


def _drop_mtp_expert(t):
    del t["mtp.layers.0.mlp.experts.5.down_proj.weight"]


def _reshape_mtp_fc(t):
    t["mtp.fc.weight"] = t["mtp.fc.weight"][:, :-1].clone()


# edit, what the error must say
BAD_MTP = [
    (_drop_mtp_expert, (r"1 missing: model\.layers\.0\.mlp\.w2 needs "
                        r"mtp\.layers\.0\.mlp\.experts\.5\.down_proj\.weight")),
    (_reshape_mtp_fc, r"wrongly shaped: mtp\.fc\.weight: shape \(64, 127\), expected \(64, 128\)"),
]


@pytest.fixture(scope="module")
def refused(mtp_ckpt, tmp_path_factory):
    """Every BAD_MTP server, started together (their startups overlap)."""
    servers = launch_refused(mtp_ckpt, tmp_path_factory, BAD_MTP, extra_args=NEXTN_CPU_FLAGS)
    yield servers
    for srv in servers.values():
        srv.stop()


@pytest.mark.parametrize("edit,message", BAD_MTP, ids=[c[0].__name__ for c in BAD_MTP])
def test_bad_mtp_tensors_are_refused_naming_them(refused, edit, message):
    srv = refused[edit.__name__]
    try:
        expected = rf"(?s)server exited.*WeightLoadError: checkpoint does not match the MTP head.*{message}"
        with pytest.raises(ServerStartError, match=expected):
            srv.wait_ready(timeout=400)
    finally:
        srv.stop()

"""The reference loop on tiny random Qwen3.5-MoE models, token ids from a tokenizer built here.

Explicit mode must be `model.generate`; switch / latent runs must show the spec's transitions
under forced entropy patterns, and the server's step (`DeviceStep`) must reproduce them exactly.
"""

from __future__ import annotations

import logging

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForCausalLM,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3_5MoeTextConfig,
)

from rio_kernels.testing import poisoned_outputs  # noqa: F401 (autouse)
from rio_sglang.reasoning import tokens as tokens_mod
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.reference import generate_reference
from rio_sglang.reasoning.spec import ReasoningSpec, ReasoningStats
from rio_sglang.reasoning.tokens import TERMINATION, ReasoningTokens, resolve_tokens

V = 512
TEXT = {
    "hidden_size": 64, "num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": V, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16,
    "linear_value_head_dim": 16, "max_position_embeddings": 256,
}
END = 2
TOKENS = ReasoningTokens(  # eos None: runs last max_new_tokens, as `generate` below
    think_id=1, think_end_id=END, eos_id=None, newline_id=4, math_ids=frozenset(),
    convergence_ids=(END,), termination_ids=(END, 20, 21),
)
PROMPT = torch.tensor([[5, 17, 99, 250, 3, 42]])


def tiny_model(kind: str = "text", seed: int = 0) -> torch.nn.Module:
    """A random fp32 Qwen3.5-MoE (3 Gated DeltaNet layers + 1 attention) with spread logits."""
    torch.manual_seed(seed)
    if kind == "text":
        model = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(**TEXT))
    else:
        vision = {"depth": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 32,
                      "out_hidden_size": 64}
        model = Qwen3_5MoeForConditionalGeneration(
            Qwen3_5MoeConfig(text_config=TEXT, vision_config=vision))
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # init logits are near uniform: spread the entropies
    return model.eval()


def with_entropy(z: torch.Tensor, target: float) -> torch.Tensor:
    """z: [V] -> c * z with softmax entropy `target` (entropy falls as c grows; argmax kept)."""
    lo, hi = 0.0, 1e3
    for _ in range(80):
        c = (lo + hi) / 2
        p = torch.softmax(c * z.double(), dim=-1)
        lo, hi = (c, hi) if float(-(p * p.log()).sum()) > target else (lo, c)
    return (lo * z.double()).to(z.dtype)


class EntropySchedule(torch.nn.Module):
    """Wraps a model so that call t's last logits have entropy targets[t] (step t = call t)."""

    def __init__(self, model: torch.nn.Module, targets: list[float]):
        super().__init__()
        self.model, self.targets, self.calls = model, targets, 0

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits[0, -1] = with_entropy(out.logits[0, -1], self.targets[self.calls])
        self.calls += 1
        return out


@torch.no_grad()
def run_state(model, spec: ReasoningSpec, max_new_tokens: int):
    """The server's shape: prefill, then per step `DeviceStep.pre` on the raw logits, the greedy
    sample, `DeviceStep.post` (which may replace it), and as the next input the slot's `pending`
    row where `use` holds, else the emitted token's embedding."""
    embed = model.get_input_embeddings()
    step = DeviceStep(3, TOKENS, V, embed.weight, 0, V,
                      embed.weight[DeviceStep.special_rows(TOKENS)])
    step.reset([1], [spec], [max_new_tokens])
    rows, slots = torch.tensor([0]), torch.tensor([1])
    out, toks = model(input_ids=PROMPT, use_cache=True), []
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1]  # [1, V]
        pre = step.pre(logits, rows, slots)
        tokens = logits.argmax(dim=-1)  # [1]
        step.post(pre, tokens)
        toks.append(int(tokens[0]))
        if len(toks) == max_new_tokens:  # SGLang's finish (no EOS id here)
            break
        soft = bool(step.tables.use[1])
        embeds = (step.tables.pending[1:2] if soft else embed(tokens))[:, None]  # [1, 1, H]
        out = model(inputs_embeds=embeds, past_key_values=out.past_key_values, use_cache=True)
    stats = step.read_final(1)
    modes = ["latent" if m == "L" else "explicit" for m in stats.pop("modes")]
    return toks, modes, ReasoningStats(**stats)


@pytest.mark.parametrize("kind", ["text", "conditional"])
def test_explicit_mode_is_generate_greedy(kind: str) -> None:
    model = tiny_model(kind)
    want = model.generate(PROMPT, max_new_tokens=8, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, PROMPT.shape[1]:].tolist()
    got = generate_reference(model, TOKENS, PROMPT, ReasoningSpec(mode="explicit"), 8)
    assert got.tokens == want
    assert got.modes == ["explicit"] * 8 and got.stats.explicit_steps == 8


def test_switch_transitions_under_forced_entropies() -> None:
    # step: 0 L (H_ref 3.0) | 1 3.0->2.0: explicit, switch 1, convergence queued | 2 forced
    # </think>, window not reached | 3 H 4.0 > 2.0 after 2 steps: latent | 4 stays latent |
    # 5 1.0 < 4.0: explicit, switch 2, convergence again | 6 forced </think> | 7.. explicit
    # (after step 5 the entropies fall: equal targets left H > H_ref to fp32 rounding)
    targets = [3.0, 2.0, 2.5, 4.0, 4.5, 1.0, 0.9, 0.8, 0.7, 0.6]
    spec = ReasoningSpec(mode="switch", window=2, max_switches=1)
    res = generate_reference(EntropySchedule(tiny_model(), targets), TOKENS, PROMPT, spec, 10)
    kinds = "".join("L" if m == "latent" else "E" for m in res.modes)
    assert kinds == "LEELLEEEEE"
    assert res.tokens[2] == END and res.tokens[6] == END
    assert res.stats.switches == 2 and res.stats.injected_convergence
    assert not res.stats.injected_termination
    assert (res.stats.latent_steps, res.stats.explicit_steps) == (3, 7)


def test_switch_termination_ends_the_request() -> None:
    # After step 5 the entropies fall (equal ones left H > H_ref to fp32 rounding: a 4th switch).
    targets = [3.0, 2.0, 2.5, 1.5, 2.5, 1.0] + [0.9 - 0.05 * i for i in range(10)]
    spec = ReasoningSpec(mode="switch", window=1, max_switches=1, termination_budget=4)
    res = generate_reference(EntropySchedule(tiny_model(), targets), TOKENS, PROMPT, spec, 16)
    # switches at steps 1, 3, 5; the third (> 2 * max_switches) queues termination: 3 more steps
    assert res.stats.switches == 3 and res.stats.injected_termination
    assert len(res.tokens) == 9 and res.tokens[6:9] == [END, 20, 21]


@pytest.mark.parametrize("spec, targets", [
    (ReasoningSpec(mode="switch", window=2, max_switches=1), [3.0, 2.0, 2.5, 4.0, 4.5, 1.0, 1.2]),
    (ReasoningSpec(mode="switch", window=1, alpha0=0.5, soft_topk=16),
     [3.0, 2.0, 3.5, 2.5, 4.0, 3.0, 4.5, 1.0]),
    (ReasoningSpec(mode="latent", thinking_budget=4), [3.0, 2.0, 1.0, 0.5, 3.0, 2.0, 1.0]),
    (ReasoningSpec(mode="latent", cold_stop_threshold=1.5, cold_stop_steps=2),
     [3.0, 1.0, 1.0, 3.0, 2.0, 1.0, 2.0]),
], ids=["switch", "switch-topk", "latent-budget", "latent-cold-stop"])
def test_state_matches_reference_token_for_token(spec, targets) -> None:
    n = len(targets)
    ref = generate_reference(EntropySchedule(tiny_model(), targets), TOKENS, PROMPT, spec, n)
    toks, modes, stats = run_state(EntropySchedule(tiny_model(), targets), spec, n)
    assert (toks, modes) == (ref.tokens, ref.modes)
    assert stats == ref.stats
    assert "latent" in modes and "explicit" in modes


def test_state_matches_reference_on_natural_entropies() -> None:
    spec = ReasoningSpec(mode="switch", window=2, alpha0=0.6)
    ref = generate_reference(tiny_model(seed=3), TOKENS, PROMPT, spec, 12)
    toks, modes, stats = run_state(tiny_model(seed=3), spec, 12)
    assert (toks, modes, stats) == (ref.tokens, ref.modes, ref.stats)
    assert ref.stats.switches > 0


def tiny_tokenizer(extra_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the spot, with the chat and thinking special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["The final answer is 42.\nLet x = y + 1, so x^2 = 9.\n"] * 50
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
    fast.add_tokens(list(extra_tokens))
    return fast


def test_resolve_tokens_by_string(caplog) -> None:
    tokens_mod._log_newline_fallback.cache_clear()
    tok = tiny_tokenizer()
    with caplog.at_level(logging.WARNING, logger=tokens_mod.__name__):
        ids = resolve_tokens(tok)
        assert resolve_tokens(tok) == ids
    assert len([r for r in caplog.records if "newline" in r.getMessage()]) == 1  # logged once
    assert tok.convert_ids_to_tokens([ids.think_id, ids.think_end_id, ids.eos_id]) == [
        "<think>", "</think>", "<|im_end|>"]
    assert ids.newline_id == tok.encode("\n", add_special_tokens=False)[0]
    assert ids.convergence_ids == (ids.think_end_id,)
    assert tok.decode(list(ids.termination_ids)) == TERMINATION
    for symbol in ["7", "x", "Q", "+", "\\frac"]:
        assert set(tok.encode(symbol, add_special_tokens=False)) <= ids.math_ids
    assert not set(tok.encode(".", add_special_tokens=False)) & ids.math_ids
    other = resolve_tokens(tok, convergence_text="\n\n</think>\n\n")
    assert other.convergence_ids == tuple(tok.encode("\n\n</think>\n\n", add_special_tokens=False))


def test_backslash_n_token_is_preferred(caplog) -> None:
    tok = tiny_tokenizer(extra_tokens=("\\n",))
    with caplog.at_level(logging.WARNING, logger=tokens_mod.__name__):
        ids = resolve_tokens(tok)
    assert ids.newline_id == tok.convert_tokens_to_ids("\\n")
    assert ids.newline_id != tok.encode("\n", add_special_tokens=False)[0]
    assert not caplog.records

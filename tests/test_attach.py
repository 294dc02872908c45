"""SwiReasoning's attachment to a stock model, in-process: the served tokenizer's ids and the
family's convergence text, a vocabulary without think tags (explicit only, latent refused with
the reason), and pipeline parallelism refused at start-up for a class without Rio's rows."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rio_sglang.reasoning.tokens import OTHER_CONVERGENCE, QWEN_CONVERGENCE, THINK_END
from rio_sglang.runtime import attach, validate
from rio_sglang.tiny import FAMILIES

# family, the convergence text the upstream loop uses for it
CONVERGENCE = [("qwen3", QWEN_CONVERGENCE), ("qwen3-untied", QWEN_CONVERGENCE),
               ("qwen3-moe", QWEN_CONVERGENCE), ("llama", OTHER_CONVERGENCE),
               ("qwen2", OTHER_CONVERGENCE)]


def test_every_family_is_in_the_table():
    assert sorted(f for f, _ in CONVERGENCE) == sorted(FAMILIES)


@pytest.mark.parametrize("family,text", CONVERGENCE, ids=[f for f, _ in CONVERGENCE])
def test_tokens_come_from_the_served_tokenizer(family_ckpt, family, text):
    ckpt = family_ckpt(family)
    tok = AutoTokenizer.from_pretrained(ckpt)
    tokens = attach.served_tokens(str(ckpt), FAMILIES[family].model_type)
    assert tokens.think_end_id == tok.convert_tokens_to_ids(THINK_END)
    assert tokens.convergence_ids == tuple(tok.encode(text, add_special_tokens=False))
    assert tokens.eos_id == tok.eos_token_id and tokens.math_ids
    assert validate.latent_refusal(tok) is None


def test_a_vocabulary_without_think_tags_serves_explicit_only(family_ckpt, caplog):
    ckpt = family_ckpt("qwen3", think_tags=False)
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert attach.served_tokens(str(ckpt), "qwen3") is None  # no runtime: explicit decoding
    why = validate.latent_refusal(tok)
    assert "no <think> token" in why
    params = {"custom_params": {"rio_reasoning": {"mode": "switch"}}}
    with pytest.raises(ValueError, match=r"rio_reasoning\.mode: 'switch' .*no <think> token"):
        validate.check_reasoning(params, len(tok), 4096, no_latent=why)
    validate.check_reasoning({"custom_params": {"rio_reasoning": {"mode": "explicit"}}},
                             len(tok), 4096, no_latent=why)


class StockModel:
    """What `attach` reads of an SGLang causal LM before it touches a tensor."""

    config = type("Config", (), {"vocab_size": 512})()

    def get_input_embeddings(self):
        raise AssertionError("refused before the embedding is read")


def test_pipeline_parallelism_is_refused_at_start_for_a_stock_class():
    with pytest.raises(attach.AttachError, match="pipeline parallelism .*StockModel.*--pp-size 1"):
        attach.attach(StockModel(), 9, tokens=None, pp_size=2, tp_size=1)

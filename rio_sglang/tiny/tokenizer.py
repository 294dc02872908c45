"""Train the tiny checkpoints' tokenizer on the spot: byte-level BPE with Qwen's special tokens.

Called by `rio_sglang.tiny.writer`; deterministic for a given vocabulary size.
"""

from __future__ import annotations

from .chat_template import CHAT_TEMPLATE

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. What is 12 + 30? The answer is 42.\n",
    "Let me think step by step about the question before I answer it.\n",
    "Rio de Janeiro is a city in Brazil. Describe the image. Hello, how are you today?\n",
    "def add(a, b):\n    return a + b\n",
    "\\frac{1}{2} + \\sqrt{4} = 2.5; x^2 - 3x + 2 = 0 so x = 1 or x = 2.\n",
    "<function=get_weather>\n<parameter=city>\nRio\n</parameter>\n</function>\n",
    '{"name": "get_weather", "arguments": {"city": "Rio"}}\n',
    "user assistant system tool thinking answer final The final answer is\n",
)


THINK_TAGS = ("<think>", "</think>")


def special_tokens(think_tags: bool = True) -> tuple[str, ...]:
    """SPECIAL_TOKENS, or without `<think>` / `</think>` (a vocabulary that cannot think)."""
    return SPECIAL_TOKENS if think_tags else tuple(t for t in SPECIAL_TOKENS
                                                   if t not in THINK_TAGS)


def _qwen_split(tok) -> None:
    """Normalise and pre-tokenize as released Qwen tokenizers: NFC, transformers' Qwen2 regex,
    then bytes. transformers' Qwen2Tokenizer imposes exactly this (it rebuilds the pipeline and
    is forced on model_type qwen2 whatever tokenizer.json says), while SGLang restores
    tokenizer.json's pre-tokenizer where its type differs: with this both agree."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_tokenizer(vocab_size: int, think_tags: bool = True, qwen_split: bool = False):
    """Return a `PreTrainedTokenizerFast` of exactly `vocab_size` ids (BPE padded by filler);
    `think_tags=False`: no `<think>` / `</think>` tokens (the chat template still writes them,
    as text of several tokens); `qwen_split`: released Qwen's pre-tokenization (_qwen_split),
    else GPT-2's byte-level regex (the Rio tiny's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens(think_tags)
    tok = Tokenizer(models.BPE())
    if qwen_split:
        _qwen_split(tok)
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    # The corpus may run out of merges before vocab_size: pad with filler tokens so that
    # the tokenizer and the embedding table agree on V.
    missing = vocab_size - tok.get_vocab_size()
    if missing < 0:
        raise ValueError(f"trained {tok.get_vocab_size()} tokens, more than vocab {vocab_size}")
    tok.add_tokens([f"<|filler_{i}|>" for i in range(missing)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(specials[1:]),
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    return fast


def special_ids(tokenizer, tokens: tuple[str, ...] = SPECIAL_TOKENS) -> dict[str, int]:
    """Look every special token up by its string (never hard-code ids)."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}
    unknown = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"tokenizer lacks special tokens {unknown}")
    return ids

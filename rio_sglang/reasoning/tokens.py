"""The token ids SwiReasoning needs, looked up by string from the served tokenizer.

Built once per server (or per test) by `resolve_tokens`; ids are never hard-coded.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

THINK = "<think>"
THINK_END = "</think>"
# The reference blends the first latent input with the two-character token backslash-n.
BACKSLASH_N = "\\n"
# Convergence text: "</think>" for Qwen3 models (Rio's Qwen3.5 included), "\n\n</think>\n\n" for
# other families (DeepSeek-R1-Distill's Llama and Qwen2), as the upstream loop picks by model.
QWEN_CONVERGENCE = "</think>"
OTHER_CONVERGENCE = "\n\n</think>\n\n"
QWEN3_MODEL_TYPES = ("qwen3",)  # config.model_type prefixes that take the Qwen texts
TERMINATION = "</think>\n\nThe final answer is"

# Symbols whose token ids force an explicit step: the reference's LaTeX / arithmetic list,
# then digits and ASCII letters (added below).
_LATEX = r"""
\leq \geq \neq \approx \sim \equiv \to \implies \iff \left( \right) \left[ \right] \left\{
\right\} \begin{pmatrix} \end{pmatrix} \frac \dfrac \sqrt \sqrt[] \in \notin \subset \supset
\subseteq \supseteq \cup \cap \emptyset \varnothing \pi \theta \alpha \beta \gamma \delta
\epsilon \zeta \lambda \mu \nu \sin \cos \tan \arcsin \arccos \arctan \log \ln \exp \binom
\choose \cdot \dots \ldots \cdots \vdots \ddots \mathbb \mathbf \mathrm \text \mbox \infty
\circ \prime \ast \star \triangle \triangleleft \triangleright \perp \parallel \angle \boxed
\overline \underline \lceil \rceil \lfloor \rfloor \left \right \mid \vert \Vert \because
\therefore \forall \exists \wedge \vee \neg \sum \prod \int \lim \min \max \arg \deg \gcd
\operatorname \cot \cotg \sec \csc
"""
_PLAIN = "+ - * / ^ = < > ( ) [ ] { } _ |"


def math_symbols() -> list[str]:
    """The strings whose encodings make up the math-token id set, in the reference's spirit."""
    symbols = _PLAIN.split() + _LATEX.split()
    symbols += [chr(c) for c in range(ord("0"), ord("9") + 1)]
    symbols += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    symbols += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    return symbols


@dataclass(frozen=True)
class ReasoningTokens:
    """Special ids for one vocabulary. eos_id None: the stream never stops on EOS here."""

    think_id: int
    think_end_id: int
    eos_id: int | None
    newline_id: int  # the "\\n" token, else the newline token
    math_ids: frozenset[int]
    convergence_ids: tuple[int, ...]
    termination_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.convergence_ids or not self.termination_ids:
            raise ValueError("convergence and termination texts must encode to >= 1 token")


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _token_id(tokenizer: Any, token: str) -> int | None:
    """The id of `token` as one vocabulary entry, or None when the vocabulary lacks it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if token_id is None or (unk is not None and token_id == unk and token != tokenizer.unk_token):
        return None
    return int(token_id)


def _single_id(tokenizer: Any, token: str) -> int:
    token_id = _token_id(tokenizer, token)
    if token_id is not None:
        return token_id
    ids = _encode(tokenizer, token)
    if len(ids) != 1:
        raise ValueError(f"cannot resolve {token!r} to a single token id: {ids}")
    return ids[0]


@functools.cache
def _log_newline_fallback(vocab_size: int) -> None:
    logger.warning(
        "vocabulary (size %d) has no %r token: blending step 0 with the newline token",
        vocab_size,
        BACKSLASH_N,
    )


def _newline_id(tokenizer: Any) -> int:
    token_id = _token_id(tokenizer, BACKSLASH_N)
    if token_id is not None:
        return token_id
    ids = _encode(tokenizer, "\n")
    if len(ids) != 1:
        raise ValueError(f"neither {BACKSLASH_N!r} nor a newline token in the vocabulary: {ids}")
    _log_newline_fallback(len(tokenizer))
    return ids[0]


def resolve_tokens(
    tokenizer: Any,
    convergence_text: str = QWEN_CONVERGENCE,
    termination_text: str = TERMINATION,
) -> ReasoningTokens:
    """Looks every id up by string; raises ValueError if `<think>` / `</think>` are not single."""
    math_ids: set[int] = set()
    for symbol in math_symbols():
        math_ids.update(_encode(tokenizer, symbol))
    eos = tokenizer.eos_token_id
    return ReasoningTokens(
        think_id=_single_id(tokenizer, THINK),
        think_end_id=_single_id(tokenizer, THINK_END),
        eos_id=None if eos is None else int(eos),
        newline_id=_newline_id(tokenizer),
        math_ids=frozenset(math_ids),
        convergence_ids=tuple(_encode(tokenizer, convergence_text)),
        termination_ids=tuple(_encode(tokenizer, termination_text)),
    )


def convergence_text(model_type: str) -> str:
    """The convergence text of a model family, by its config's `model_type`."""
    return QWEN_CONVERGENCE if model_type.startswith(QWEN3_MODEL_TYPES) else OTHER_CONVERGENCE


def missing_think_tag(tokenizer: Any) -> str | None:
    """Why a vocabulary cannot run latent reasoning (no single-token `<think>` / `</think>`),
    or None."""
    for tag in (THINK, THINK_END):
        if _token_id(tokenizer, tag) is None and len(_encode(tokenizer, tag)) != 1:
            return (f"the served vocabulary has no {tag} token (latent and switch reasoning "
                    "need <think> and </think> as single tokens)")
    return None


def family_tokens(tokenizer: Any, model_type: str) -> ReasoningTokens:
    """`resolve_tokens` with the family's convergence text (`model_type`: the config's);
    ValueError saying why when the vocabulary has no think tags."""
    missing = missing_think_tag(tokenizer)
    if missing is not None:
        raise ValueError(missing)
    return resolve_tokens(tokenizer, convergence_text(model_type))

"""SwiReasoning as a plain batch-of-one transformers loop, written from SWIREASONING.md.

The server's step (`device.py::DeviceStep`, rio_kernels.swir_step) must match it token for token
and mode for mode; tests call `generate_reference` on tiny models, `swir_step` on synthetic logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rio_sglang.reasoning.spec import ReasoningSpec, ReasoningStats
from rio_sglang.reasoning.tokens import ReasoningTokens


@dataclass
class SlotState:
    """One request's state. `explicit` is the mode (starts latent); `locked` = explicit for good."""

    explicit: bool = False
    h_ref: float = 0.0
    stay: int = 0
    switches: int = 0
    locked: bool = False
    closed: bool = False  # `</think>` was emitted (sampled or injected)
    step: int = 0
    queue: list[int] = field(default_factory=list)
    queue_locks: bool = False  # budget / cold-stop `</think>` locks; convergence does not
    answer_budget: int = -1  # -1: no termination injected
    cold_count: int = 0
    stats: dict[str, int | bool] = field(default_factory=lambda: ReasoningStats().to_json())


@dataclass(frozen=True)
class StepResult:
    token: int  # emitted (after injections)
    embed: torch.Tensor  # [H] fp32: the next step's input
    is_latent: bool
    finished: bool


@dataclass(frozen=True)
class ReferenceResult:
    tokens: list[int]
    modes: list[str]  # per step: "latent" or "explicit" (the kind of the next input)
    stats: ReasoningStats


def sample_token(
    logits: torch.Tensor, greedy: bool, temperature: float, top_k: int, top_p: float,
    min_p: float, generator: torch.Generator | None = None,
) -> int:
    """logits: [V]. Temperature, then top-k, top-p, min-p filters, softmax, sample or argmax."""
    z = logits.float() / temperature  # [V]
    if top_k > 0:
        z = torch.where(z < torch.topk(z, top_k).values[-1], float("-inf"), z)
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, descending=True)
        cum = torch.softmax(sorted_z, dim=-1).cumsum(dim=-1)
        drop = torch.cat([torch.zeros(1, dtype=torch.bool), cum[:-1] > top_p])  # keep the first
        z = z.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    if min_p > 0:
        z = torch.where(torch.softmax(z, dim=-1) < min_p, float("-inf"), z)
    probs = torch.softmax(z, dim=-1)
    if greedy:
        return int(probs.argmax())
    return int(torch.multinomial(probs, 1, generator=generator))


def soft_mixture(p0: torch.Tensor, weight: torch.Tensor, topk: int | None) -> torch.Tensor:
    """p0: [V] fp32, weight: [V, H] -> [H] fp32: p0 @ E, or the renormalised top-k of p0."""
    if topk is None:
        return p0 @ weight.float()
    vals, ids = torch.topk(p0, topk)  # [k]
    return (vals / vals.sum()) @ weight.float()[ids]


def swir_step(
    st: SlotState, logits: torch.Tensor, sampled: int, weight: torch.Tensor,
    tokens: ReasoningTokens, spec: ReasoningSpec, max_new_tokens: int,
) -> StepResult:
    """One generated step (SWIREASONING.md steps 2-9). logits: [V] raw, weight: [V, H]."""
    E = weight.float()  # [V, H]
    step = st.step
    st.step += 1
    if spec.mode == "explicit":
        st.stats["explicit_steps"] += 1
        finished = sampled == tokens.eos_id or step + 1 >= max_new_tokens
        return StepResult(sampled, E[sampled], False, finished)

    # 2. entropy of the raw distribution
    p0 = torch.softmax(logits.float(), dim=-1)  # [V]
    H = float(-(p0 * p0.clamp_min(1e-12).log()).sum())
    # 3. a sampled `</think>` locks; 4. a pending injection replaces the token
    tok = sampled
    st.locked |= tok == tokens.think_end_id
    if st.queue:
        tok = st.queue.pop(0)
        st.locked |= st.queue_locks and tok == tokens.think_end_id
    st.closed |= tok == tokens.think_end_id

    # 5. mode update (latent mode never goes explicit on its own)
    to_explicit = to_latent = False
    if step == 0:
        st.h_ref = H
    else:
        st.stay += 1
        to_explicit = spec.mode == "switch" and not st.explicit and H < st.h_ref
        to_latent = st.explicit and H > st.h_ref and st.stay >= spec.window and not st.locked
        if to_explicit or to_latent:
            st.explicit, st.stay, st.h_ref = not st.explicit, 0, H
        st.switches += int(to_explicit)

    # 6. is the step explicit?
    is_math = spec.math_tokens_explicit and tok in tokens.math_ids
    is_explicit = st.explicit or st.locked or is_math

    # 7. embeddings, with the delimiter blends
    explicit_emb = E[tok]  # [H]
    latent_emb = soft_mixture(p0, weight, spec.soft_topk)  # [H]
    a = spec.alpha0 + (1 - spec.alpha0) * step / max_new_tokens
    b = spec.beta0 + (1 - spec.beta0) * step / max_new_tokens
    if step == 0:
        latent_emb = 0.9 * latent_emb + 0.1 * E[tokens.newline_id]
    elif to_latent:
        latent_emb = a * latent_emb + (1 - a) * E[tokens.think_id]
    if to_explicit:
        explicit_emb = b * latent_emb + (1 - b) * E[tokens.think_end_id]

    # 8. switch-count control: convergence, then termination with an answer budget
    if spec.max_switches is not None and step > 0:
        m = spec.max_switches
        if to_explicit and m <= st.switches <= 2 * m:
            st.queue, st.queue_locks = list(tokens.convergence_ids), False
            st.stats["injected_convergence"] = True
        if to_explicit and st.switches > 2 * m:
            st.queue, st.queue_locks = list(tokens.termination_ids), False
            st.answer_budget = spec.termination_budget
            st.stats["injected_termination"] = True
        if st.answer_budget >= 0:
            st.answer_budget -= 1

    # Thinking budget and cold stop (ours): inject a locking `</think>` at the next step.
    if spec.cold_stop_threshold is not None:
        cold = not st.closed and H < spec.cold_stop_threshold
        st.cold_count = st.cold_count + 1 if cold else 0
    over_budget = spec.thinking_budget is not None and step + 1 >= spec.thinking_budget
    cold_stop = spec.cold_stop_steps is not None and st.cold_count >= spec.cold_stop_steps
    if not st.closed and not st.queue and (over_budget or cold_stop):
        st.queue, st.queue_locks = [tokens.think_end_id], True
        st.stats["forced_think_end"] = True

    # 9. emit; count; finish on EOS, the answer budget or max_new_tokens
    st.stats["switches"] = st.switches
    st.stats["explicit_steps" if is_explicit else "latent_steps"] += 1
    finished = tok == tokens.eos_id or st.answer_budget == 0 or step + 1 >= max_new_tokens
    return StepResult(tok, explicit_emb if is_explicit else latent_emb, not is_explicit, finished)


@torch.no_grad()
def generate_reference(
    model: torch.nn.Module, tokens: ReasoningTokens, input_ids: torch.Tensor,
    spec: ReasoningSpec, max_new_tokens: int, greedy: bool = True, temperature: float = 0.6,
    top_k: int = 20, top_p: float = 0.95, min_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> ReferenceResult:
    """input_ids: [1, T] prompt. Prefill, then one model call per step on an input embedding."""
    weight = model.get_input_embeddings().weight  # [V, H]
    st = SlotState()
    out = model(input_ids=input_ids, use_cache=True)
    emitted: list[int] = []
    modes: list[str] = []
    for _ in range(max_new_tokens):
        logits = out.logits[0, -1]  # [V]
        sampled = sample_token(logits, greedy, temperature, top_k, top_p, min_p, generator)
        res = swir_step(st, logits, sampled, weight, tokens, spec, max_new_tokens)
        emitted.append(res.token)
        modes.append("latent" if res.is_latent else "explicit")
        if res.finished:
            break
        embeds = res.embed.to(weight.dtype)[None, None]  # [1, 1, H]
        out = model(inputs_embeds=embeds, past_key_values=out.past_key_values, use_cache=True)
    return ReferenceResult(emitted, modes, ReasoningStats(**st.stats))

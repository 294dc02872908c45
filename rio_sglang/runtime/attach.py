"""SwiReasoning on any SGLang causal LM: the runtime attached through what every one has.

`hooks.py::after_memory_pool` calls `attach` once the request-slot pool exists and before CUDA
graphs are captured. The mixture rows are the model's `get_input_embeddings()` (this rank's
VocabParallelEmbedding shard, no copy; Rio's class under pipeline parallelism hands a
`latent.py::LatentTable` instead). Two torch-level taps carry the runtime into the forward:
- the model's `forward` is wrapped on the instance (SGLang calls `model.forward(...)` directly,
  so a module pre-hook would never run): it records the batch, whose request slots say which
  rows may take a soft input;
- a forward hook on the embedding module replaces those rows (`ReasoningRuntime.override_embeds`:
  a gather and a select, captured as such in a CUDA graph).
"""

from __future__ import annotations

import functools
import logging

from rio_sglang import env
from rio_sglang.logmarks import REASONING_MARK
from rio_sglang.reasoning.device import DeviceStep
from rio_sglang.reasoning.tokens import ReasoningTokens, family_tokens
from rio_sglang.runtime.journal import Journal
from rio_sglang.runtime.sampler import ReasoningRuntime

log = logging.getLogger(__name__)


class AttachError(RuntimeError):
    """The server cannot run latent reasoning as configured; the message says why."""


def served_tokens(tokenizer_path: str, model_type: str) -> ReasoningTokens | None:
    """The served tokenizer's reasoning ids (None, logged, when it has no think tags)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    try:
        return family_tokens(tokenizer, model_type)
    except ValueError as e:
        log.warning("%s: off, explicit requests only (%s)", REASONING_MARK, e)
        return None


def attach(model, num_slots: int, tokens: ReasoningTokens, pp_size: int, tp_size: int
           ) -> ReasoningRuntime:
    """Per-slot reasoning state on this rank over its mixture rows, and the two taps."""
    source = getattr(model, "latent", None)  # Rio's LatentTable (its own PP copy)
    if pp_size > 1 and source is None:
        raise AttachError(
            f"RIO_SWIREASONING: latent reasoning under pipeline parallelism needs the mixture "
            f"rows on the last stage; {type(model).__name__} keeps its embedding on the first "
            "only. Serve it with --pp-size 1 (tensor parallelism works).")
    embed = model.get_input_embeddings()
    all_reduce = _all_reduce() if tp_size > 1 else None
    if source is not None:
        table, v_start, v_len, special = source.rows(embed, tokens, all_reduce)
    else:
        table, v_start, v_len, special = shard_rows(embed, tokens, all_reduce)
    vocab = model.config.vocab_size
    device = DeviceStep(num_slots, tokens, vocab, table, v_start, v_len, special, all_reduce)
    # Under PP the last stage steps and the first embeds: states are kept, soft inputs not.
    journal = Journal(table.device, env.resume_memory_bytes(), keep_soft=pp_size == 1)
    runtime = ReasoningRuntime(device, relay_to_first_stage=pp_size > 1, journal=journal)
    _tap_forward(model, runtime)
    if not _is_missing(embed):
        embed.register_forward_hook(lambda module, args, out: runtime.override_embeds(out))
    copy = getattr(source, "embed", None)
    copy_bytes = 0 if copy is None else copy.numel() * copy.element_size()
    buffers = device.buffer_bytes()
    log.warning(
        "%s: %s, %d slots; mixture rows: vocab [%d, %d) of %d, %s; reasoning buffers %.2f MiB "
        "(%s); soft inputs kept for resumption after retraction: up to %d MiB of host memory",
        REASONING_MARK, type(model).__name__, num_slots, v_start, v_start + v_len, vocab,
        f"a copy of {copy_bytes / 2**20:.2f} MiB" if copy_bytes
        else "the embedding shard itself (no copy)", sum(buffers.values()) / 2**20,
        ", ".join(f"{k} {v / 2**20:.2f}" for k, v in buffers.items()),
        journal.bound // 2**20 if journal.keep_soft else 0)
    return runtime


def shard_rows(embed, tokens: ReasoningTokens, all_reduce=None):
    """(table [>= v_len, H], v_start, v_len, special [3, H]) from a VocabParallelEmbedding:
    this rank's vocab shard itself, and the three special rows, each from the rank holding it."""
    import torch

    ids = DeviceStep.special_rows(tokens)
    v_start = embed.shard_indices.org_vocab_start_index
    v_len = embed.shard_indices.org_vocab_end_index - v_start
    table = embed.weight.data
    special = torch.zeros(3, table.shape[1], dtype=table.dtype, device=table.device)
    for i, tok in enumerate(ids):
        if v_start <= tok < v_start + v_len:
            special[i] = table[tok - v_start]
    if all_reduce is not None:
        special = all_reduce(special)
    return table, v_start, v_len, special


def _tap_forward(model, runtime: ReasoningRuntime) -> None:
    """The model's forward records its ForwardBatch (third positional or `forward_batch`) for
    the forward's duration."""
    forward = model.forward

    @functools.wraps(forward)
    def tapped(*args, **kwargs):
        runtime.batch = kwargs["forward_batch"] if "forward_batch" in kwargs else args[2]
        try:
            return forward(*args, **kwargs)
        finally:  # the embedding may run outside the forward (SGLang's extend overrides)
            runtime.batch = None

    model.forward = tapped


def _is_missing(module) -> bool:
    return type(module).__name__ == "PPMissingLayer"


def _all_reduce():
    from sglang.srt.distributed.communication_op import tensor_model_parallel_all_reduce

    return tensor_model_parallel_all_reduce

"""Rio's multi-token-prediction (MTP) head, SGLang's draft model for NEXTN speculative decoding.

With `--speculative-algorithm NEXTN`, SGLang builds the draft from the target checkpoint under
the architecture name `Qwen3_5ForCausalLMMTP` (model_config.py renames Qwen3.5-MoE's); this
package registers that name, so the draft runs our layers: the same gated full-attention
decoder layer and Triton-kernel MoE as the target, loaded strictly from `mtp.*`.

One draft step: h = fc([norm_e(embed(next token)) | norm_h(target hidden)]), one decoder layer,
the final norm, the target's output head. Embedding and head are shared with the target
(SGLang's EAGLE worker hands them over through `set_embed_and_head`).
"""

from __future__ import annotations

import copy
import logging

import torch
from sglang.srt.distributed.parallel_state import get_tensor_model_parallel_world_size
from sglang.srt.layers.layernorm import GemmaRMSNorm
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from sglang.srt.runtime_context import get_parallel
from torch import nn

from rio_sglang.layers.decoder import DecoderLayer
from rio_sglang.logmarks import MTP_MARK
from rio_sglang.weights import MTP_RULES, load_checkpoint, mtp_name

log = logging.getLogger(__name__)


class MtpTextModel(nn.Module):
    """Embedding, one full-attention MoE decoder layer (layer id 0 of the draft's own KV pool)
    and the final norm; parameter names follow the target's text model, so the loader's
    layer rules apply unchanged."""

    def __init__(self, config):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(config, 0, "model.layers.0")])
        self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, positions, h, forward_batch):
        h, residual = self.layers[0](positions, h, None, forward_batch)
        h, _ = self.norm(h, residual)
        return h


# The class name is the architecture SGLang gives a Qwen3.5(-MoE) draft (see module docstring).
class Qwen3_5ForCausalLMMTP(nn.Module):
    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        text = getattr(config, "text_config", config)
        if quant_config is not None:
            raise NotImplementedError("rio-sglang's MTP head serves bf16 only: serve an FP8 "
                                      "checkpoint or --quantization fp8 without NEXTN")
        if getattr(text, "num_experts", None) is None:
            raise NotImplementedError(
                "rio-sglang's MTP head is Qwen3.5-MoE's; serve a dense Qwen3.5 draft without "
                "SGLANG_EXTERNAL_MODEL_PACKAGE=rio_sglang.models")
        if get_parallel().pp_group.world_size > 1:
            raise NotImplementedError("NEXTN speculative decoding with pipeline parallelism is "
                                      "not implemented in rio-sglang: serve it at PP 1")
        mtp = copy.deepcopy(text)  # one full-attention layer; the target's config stays as is
        mtp.num_hidden_layers, mtp.full_attention_interval = 1, 1
        mtp.layer_types = ["full_attention"]
        self.config = mtp
        self.tp_size = get_tensor_model_parallel_world_size()
        h = mtp.hidden_size
        self.fc = nn.Linear(2 * h, h, bias=False)
        self.pre_fc_norm_embedding = GemmaRMSNorm(h, eps=mtp.rms_norm_eps)
        self.pre_fc_norm_hidden = GemmaRMSNorm(h, eps=mtp.rms_norm_eps)
        self.model = MtpTextModel(mtp)
        self.lm_head = ParallelLMHead(mtp.vocab_size, h)
        self.logits_processor = LogitsProcessor(mtp)
        mlp = self.model.layers[0].mlp
        log.warning("%s: %s.%s (%d experts top-%d, experts %d-%d on this rank)", MTP_MARK,
                    type(self).__module__, type(self).__qualname__, mtp.num_experts,
                    mtp.num_experts_per_tok, mlp.e_start, mlp.e_start + mlp.e_local)

    # SGLang's EAGLE worker shares the target's embedding and output head with the draft.
    def get_embed_and_head(self):
        return self.model.embed_tokens.weight, self.lm_head.weight

    def set_embed_and_head(self, embed, head):
        if embed is not None:
            del self.model.embed_tokens.weight
            self.model.embed_tokens.weight = embed
        if head is not None:
            del self.lm_head.weight
            self.lm_head.weight = head

    @torch.no_grad()
    def forward(self, input_ids, positions, forward_batch, input_embeds=None, **kwargs):
        if input_embeds is not None:
            raise ValueError("the MTP draft embeds its own input ids")
        embeds = forward_batch.mm_input_embeds
        mode = forward_batch.forward_mode
        if embeds is not None and mode.is_extend() and forward_batch.contains_mm_inputs() \
                and not mode.is_draft_extend_v2():
            # An image prompt: rows are the target's multimodal embeddings; the last row of
            # each request is the token the target just produced, embedded here.
            last = (forward_batch.extend_start_loc + forward_batch.extend_seq_lens - 1).long()
            embeds[last] = self.model.embed_tokens(input_ids[last])
        if embeds is None:
            embeds = self.model.embed_tokens(input_ids)
        hidden = forward_batch.spec_info.hidden_states  # the target's last hidden states
        if not mode.is_idle():
            embeds = self.pre_fc_norm_embedding(embeds)
            hidden = self.pre_fc_norm_hidden(hidden)
        if hidden.shape[0] != embeds.shape[0]:
            # A captured (padded) batch: real rows first, padding never read.
            rows = min(hidden.shape[0], embeds.shape[0])
            slot = hidden.new_zeros(embeds.shape[0], hidden.shape[1])
            slot[:rows] = hidden[:rows]
            hidden = slot
        h = self.fc(torch.cat([embeds, hidden], dim=-1))
        h = self.model(positions, h, forward_batch)
        return self.logits_processor(input_ids, h, self.lm_head, forward_batch)

    def load_weights(self, weights) -> None:
        n = load_checkpoint(self, weights, MTP_RULES, mtp_name, label="the MTP head (mtp.*)")
        log.warning("rio-sglang MTP head loaded %d checkpoint tensors strictly", n)


EntryClass = [Qwen3_5ForCausalLMMTP]

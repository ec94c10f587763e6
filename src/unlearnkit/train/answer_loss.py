"""The fine-tuning loss with the LM head applied to answer positions only.

QA fine-tuning learns from the answer tokens; the prompt tokens' logits are computed by a plain causal-LM
forward and then thrown away by the -100 labels. The LM head is a large matmul (SmolLM2: 49k × 576, a fifth
of the model's FLOPs), and in the demo's rows two thirds of the positions are prompt. Here the decoder runs
on every position (the answer needs the prompt's hidden states) but the head, the softmax and their backward
only on the N positions that carry a label: the same loss and gradients (tested against the HF loss), about
a seventh less work per SmolLM2 step.

Used only where it is exactly the model's own loss: decoder-only architectures whose head is a plain linear
map of the last hidden state (no logit scaling or soft-capping) and no wrapper that must see the forward
(DDP, DeepSpeed). Everything else takes the Trainer's usual path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.collate import IGNORE

#: model_type values whose causal-LM logits are `lm_head(decoder(x).last_hidden_state)`, nothing more
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def supports_answer_only_loss(model) -> bool:
    """True if `model` (a bare HF causal LM, or a peft wrapper of one) computes logits as a plain head."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in PLAIN_HEAD_TYPES:
        return False
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return False
    try:
        return model.get_decoder() is not None and model.get_output_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False


def answer_only_loss(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Mean next-token cross-entropy over the label positions, as HF's causal-LM loss computes it.

    With `num_items_in_batch` (gradient accumulation: the label count of the whole accumulated batch) the
    sum is divided by it instead of by this batch's count, as HF's loss does.
    """
    labels = inputs["labels"]
    hidden = model.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                                 position_ids=inputs.get("position_ids"), use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])          # [N, V], N = label positions
    total = F.cross_entropy(logits.float(), target[keep], reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp_min(1)
    if isinstance(denom, torch.Tensor):
        denom = denom.to(total.device)
    return total / denom

"""The fine-tuning loss with the LM head applied to answer positions only.

QA fine-tuning learns from the answer tokens; the prompt tokens' logits are computed by a plain causal-LM
forward and then thrown away by the -100 labels. The LM head is a large matmul (SmolLM2: 49k × 576, a fifth
of the model's FLOPs), and in the demo's rows two thirds of the positions are prompt. Here the decoder runs
on every position (the answer needs the prompt's hidden states) but the head, the softmax and their backward
only on the N positions that carry a label: the same loss and gradients (tested against the HF loss), about
a seventh less work per SmolLM2 step.

Used only where it is exactly the model's own loss (`label_logprobs.supports_label_head`, which also serves
the unlearning objectives): decoder-only architectures whose head is a plain linear map of the last hidden
state (no logit scaling or soft-capping) and no wrapper that must see the forward (DDP, DeepSpeed).
Everything else takes the Trainer's usual path.
"""
from __future__ import annotations

import torch

from ..label_logprobs import label_nll


def answer_only_loss(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Mean next-token cross-entropy over the label positions, as HF's causal-LM loss computes it.

    With `num_items_in_batch` (gradient accumulation: the label count of the whole accumulated batch) the
    sum is divided by it instead of by this batch's count, as HF's loss does.
    """
    nll, keep = label_nll(model, inputs)
    total = nll.sum()
    denom = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp_min(1)
    if isinstance(denom, torch.Tensor):
        denom = denom.to(total.device)
    return total / denom

"""Tiny from-scratch Llama models and in-process tokenizers, so tests and `--quick` runs need no download.

A ~5M-parameter Llama (vocab 4096) trains at ~0.1 s/step on 2 CPU cores and memorises hundreds of
synthetic facts in about a minute: big enough to show unlearning behaviour, small enough for CI.
"""
from __future__ import annotations

from typing import Iterable

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts` (no chat template: the plain prompt template is used)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


def tiny_llama(vocab_size: int, hidden: int = 256, layers: int = 4, heads: int = 4, intermediate: int = 688,
               max_positions: int = 512, seed: int = 0, attn_implementation: str = "sdpa",
               pad_token_id: int | None = None, eos_token_id: int | None = None) -> LlamaForCausalLM:
    """A randomly initialised Llama; defaults give ~5M parameters at vocab 4096."""
    import torch

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        tie_word_embeddings=False, pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=None,
    )
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    return model


def tiny_model_and_tokenizer(texts: Iterable[str], vocab_size: int = 4096, seed: int = 0, **kwargs):
    """Tokenizer trained on `texts` plus a matching fresh tiny Llama."""
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    model = tiny_llama(len(tok), seed=seed, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kwargs)
    return model, tok

"""Models: loading by spec, the default offline model, tiny test models, LoRA."""
from .loading import ModelSpecError, load_model, load_tokenizer
from .lora import LoraSettings, apply_lora
from .tiny import tiny_llama, tiny_model_and_tokenizer, train_tokenizer

__all__ = ["ModelSpecError", "load_model", "load_tokenizer", "LoraSettings", "apply_lora", "tiny_llama",
           "tiny_model_and_tokenizer", "train_tokenizer"]

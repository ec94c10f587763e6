"""LoRA adapters through peft, with configurable target modules."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


def apply_lora(model, settings: LoraSettings | None = None, adapter_name: str = "default"):
    """Wrap `model` in a peft LoRA model; only the adapter is trainable."""
    from peft import LoraConfig, get_peft_model

    s = settings or LoraSettings()
    cfg = LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.target_modules),
                     task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, cfg, adapter_name=adapter_name)

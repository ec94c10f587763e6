"""Saved model folders that load in transformers 4.x as well as 5.x.

transformers 5 writes names that 4.x (4.45 is what open-unlearning and many users pin) does not know,
and 4.x fails loudly on some and silently on others:

* `tokenizer_config.json` names `tokenizer_class: TokenizersBackend` (5.x's name for a `tokenizer.json`
  tokenizer): 4.x refuses to load it. `PreTrainedTokenizerFast` is the same thing in both (5.x keeps it as
  an alias), so that name is written instead.
* `clean_up_tokenization_spaces` is left out; 4.x versions before 4.45 default it to True, which changes
  decoded text ("a ." → "a.") and so ROUGE. It is written as False, 5.x's behaviour.
* the chat template goes to `chat_template.jinja`, which 4.45 does not read (it would silently format
  prompts without the template); it is also kept in `tokenizer_config.json`, where both read it.
* `config.json` keeps RoPE settings only under `rope_parameters`; 4.x reads `rope_theta` / `rope_scaling`
  and silently falls back to its default θ = 10000 (SmolLM2 uses 100000), so every logit would differ.
  They are written at the top level too. `dtype` is mirrored as 4.x's `torch_dtype`.

`make_portable(folder)` rewrites those files in place (atomically); `save_model_atomically` and the
tokenizer caches call it, so every folder unlearnkit writes carries it.
"""
from __future__ import annotations

import json
from pathlib import Path

V5_ONLY_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
MODEL_CONFIG = "config.json"


def _rewrite_json(path: Path, edit) -> None:
    from ..runs import atomic_write_text

    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if edit(data):
        atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _portable_tokenizer_config(folder: Path):
    def edit(cfg: dict) -> bool:
        changed = False
        cls = cfg.get("tokenizer_class")
        if cls in V5_ONLY_TOKENIZER_CLASSES:
            cfg["tokenizer_class"] = V5_ONLY_TOKENIZER_CLASSES[cls]
            changed = True
        if "clean_up_tokenization_spaces" not in cfg:  # 5.x: False; older 4.x default to True ("a ." → "a.")
            cfg["clean_up_tokenization_spaces"] = False
            changed = True
        template = folder / CHAT_TEMPLATE_FILE
        if template.is_file() and "chat_template" not in cfg:
            cfg["chat_template"] = template.read_text(encoding="utf-8")
            changed = True
        return changed

    return edit


def portable_model_config(cfg: dict) -> bool:
    """Mirror 5.x-only keys under the names 4.x reads (both versions accept the extra keys)."""
    changed = False
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in cfg:
        cfg["rope_theta"] = rope["rope_theta"]
        changed = True
    if isinstance(rope, dict) and rope.get("rope_type", "default") != "default" and "rope_scaling" not in cfg:
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        changed = True
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
        changed = True
    return changed


def make_portable(folder: str | Path) -> None:
    """Rewrite a saved model / tokenizer folder's configs so transformers 4.45 and 5.x both load it."""
    folder = Path(folder)
    _rewrite_json(folder / TOKENIZER_CONFIG, _portable_tokenizer_config(folder))
    _rewrite_json(folder / MODEL_CONFIG, portable_model_config)


def save_tokenizer_atomically(tokenizer, out_dir: str | Path) -> Path:
    """`tokenizer.save_pretrained` into a temp dir renamed into place: a kill mid-write leaves no half folder."""
    from ..runs import atomic_dir

    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
        make_portable(tmp)
    return Path(out_dir)

"""`load_model(spec)`: one entry point for hub ids, local safetensors directories, GGUF files and the default model.

Pickled weights (`.bin`, `.pt`) are refused unless `allow_pickle=True`; `trust_remote_code` stays off
unless the caller asks for it.
"""
from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import torch

from . import default as default_model

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ModelSpecError(ValueError):
    pass


def _check_local_dir(path: Path, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ModelSpecError(f"{path}: not a model directory (no config.json)")
    has_safe = any(path.glob("*.safetensors"))
    has_pickle = any(p.suffix in PICKLE_SUFFIXES for p in path.iterdir())
    if not has_safe and has_pickle and not allow_pickle:
        raise ModelSpecError(
            f"{path}: only pickled weights found; pickle can run code on load. Convert to safetensors, or pass "
            f"allow_pickle=True if you trust this checkpoint")
    if not has_safe and not has_pickle:
        raise ModelSpecError(f"{path}: no weights found (expected *.safetensors)")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)


def check_safetensors(file: Path) -> None:
    """Parse the header (safetensors checks that it is valid JSON and that the tensors exactly cover the file),
    so a truncated or corrupt file is named here instead of failing deep inside `from_pretrained`."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt"):
            pass
    except Exception as exc:  # SafetensorError (a Rust-side type), OSError
        raise ModelSpecError(f"{file}: truncated or corrupt safetensors file ({exc}); re-save or re-download "
                             f"it (an interrupted copy leaves a short file)") from None


@contextlib.contextmanager
def reading_gguf(file: str | Path | None):
    """Name the GGUF file when transformers fails to parse it (a truncated download raises `struct.error` or
    a numpy reshape `ValueError` from deep inside the reader). No pre-check: parsing the tensor table of the
    135M model takes seconds, so the failure is translated instead."""
    if file is None:
        yield
        return
    try:
        yield
    except (struct.error, ValueError, EOFError, OSError) as exc:
        raise ModelSpecError(f"{file}: could not read this GGUF file ({type(exc).__name__}: {exc}); if it is "
                             f"truncated or corrupt (an interrupted download or copy), download it again") from None


def strip_gguf_marker(model) -> None:
    """A GGUF-loaded model is already de-quantised to fp32, but transformers refuses to save it while it
    carries the quantisation marker; drop the marker."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def resolve_model_path(spec: str) -> tuple[str, str | None]:
    """Map a spec to (from_pretrained path or id, gguf file name or None)."""
    if spec in default_model.ALIASES:
        return str(default_model.default_model_dir()), None
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSpecError(f"{path}: no such GGUF file")
        return str(path.parent), path.name
    return str(path) if path.exists() else spec, None


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    where, gguf = resolve_model_path(spec)
    with reading_gguf(gguf and Path(where) / gguf):
        tok = AutoTokenizer.from_pretrained(where, gguf_file=gguf, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str, dtype: torch.dtype | str = torch.float32, allow_pickle: bool = False,
               trust_remote_code: bool = False, attn_implementation: str | None = None, device: str | None = None):
    """Load (model, tokenizer) from `spec`: 'default'/'smollm2', a hub id, a local directory or a .gguf file.

    A directory holding a LoRA adapter (`adapter_config.json`) is loaded onto its base model with peft.
    """
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    where, gguf = resolve_model_path(spec)
    local = Path(where)
    if local.is_dir() and gguf is None:
        _check_local_dir(local, allow_pickle)
        if (local / "adapter_config.json").is_file() and not (local / "config.json").is_file():
            return _load_adapter(local, dtype, allow_pickle, trust_remote_code, attn_implementation, device)
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if gguf:
        kwargs["gguf_file"] = gguf
    elif not allow_pickle:
        kwargs["use_safetensors"] = True
    with reading_gguf(gguf and Path(where) / gguf):
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    if gguf:
        strip_gguf_marker(model)
    tok = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if device:
        model.to(device)
    return model, tok


def _load_adapter(path: Path, dtype, allow_pickle, trust_remote_code, attn_implementation, device):
    import json

    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    model, tok = load_model(base, dtype, allow_pickle, trust_remote_code, attn_implementation, device)
    return PeftModel.from_pretrained(model, str(path)), tok

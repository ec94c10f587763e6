"""UIPE: θ_uipe = θ_un + α·(θ_un − θ_ini), in memory, on LoRA adapters, or streamed over sharded checkpoints."""
from .extrapolate import (extrapolate, extrapolate_checkpoint, extrapolate_module, extrapolate_state_dict)
from .lora import extrapolate_lora, is_adapter_dir
from .plan import AlphaPlan, layer_pattern
from .safetensors_io import SafetensorsWriter, save_tensors
from .stream import extrapolate_stream
from .tensors import CheckpointMismatchError, extrapolate_tensor

__all__ = ["extrapolate", "extrapolate_checkpoint", "extrapolate_module", "extrapolate_state_dict",
           "extrapolate_lora", "is_adapter_dir", "AlphaPlan", "layer_pattern", "SafetensorsWriter", "save_tensors",
           "extrapolate_stream", "CheckpointMismatchError", "extrapolate_tensor"]

"""Reading weights: safetensors (memory-mapped)."""
from __future__ import annotations

from fastlm.weights.safetensors import SafetensorsError, TensorStore, open_checkpoint

__all__ = ["SafetensorsError", "TensorStore", "open_checkpoint"]

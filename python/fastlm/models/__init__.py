"""Hugging Face configs and tensor names -> a fastlm model spec and its weights in the executor."""
from __future__ import annotations

from typing import Callable

import ml_dtypes
import numpy as np

from fastlm import _C
from fastlm.weights import TensorStore

WEIGHT_DTYPES = ("float32", "bfloat16")


def resolve_dtype(dtype: str, store: TensorStore, names: list[str]) -> str:
    """'auto' keeps the checkpoint's precision: bf16 stays bf16, f32 and f16 run in float32."""
    if dtype in WEIGHT_DTYPES:
        return dtype
    if dtype != "auto":
        raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    kinds = {store.get(n).dtype for n in names if n in store}
    return "bfloat16" if kinds and all(k == np.dtype(ml_dtypes.bfloat16) for k in kinds) else "float32"


class Loader:
    """Fetches tensors by name with checked shapes and converts them to the weight dtype."""

    def __init__(self, store: TensorStore, dtype: str):
        self.store = store
        self.dtype = dtype

    def raw(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self.store:
            raise ValueError(f"the checkpoint lacks tensor {name!r}")
        a = self.store.get(name)
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(a.shape)}, the config implies {tuple(shape)}")
        if a.dtype.kind not in "fV" and a.dtype != np.dtype(ml_dtypes.bfloat16):
            raise ValueError(f"tensor {name!r} has dtype {a.dtype}, expected a float type")
        return a

    def f32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        return np.ascontiguousarray(self.raw(name, shape), dtype=np.float32)

    def weight(self, name: str, shape: tuple[int, ...], transpose: bool = False) -> np.ndarray:
        """A linear weight (out, in) in the weight dtype; transpose=True for Conv1D's (in, out)."""
        a = self.raw(name, shape)
        return self.convert(a.T if transpose else a)

    def convert(self, a: np.ndarray) -> np.ndarray:
        if self.dtype == "bfloat16":
            return np.ascontiguousarray(a if a.dtype == np.dtype(ml_dtypes.bfloat16) else
                                        a.astype(np.float32).astype(ml_dtypes.bfloat16))
        return np.ascontiguousarray(a, dtype=np.float32)


# architecture -> (its config's model_type, the module that builds it)
ARCHITECTURES = {"LlamaForCausalLM": ("llama", "llama"), "MistralForCausalLM": ("mistral", "llama"),
                 "Qwen2ForCausalLM": ("qwen2", "llama"), "GPT2LMHeadModel": ("gpt2", "gpt2")}


def architecture_of(config: dict) -> str:
    archs = config.get("architectures") or []
    if archs:
        return archs[0]
    model_type = config.get("model_type")
    return next((a for a, (mt, _) in ARCHITECTURES.items() if mt == model_type), str(model_type))


def build(config: dict, store: TensorStore, dtype: str = "auto", max_seq_len: int | None = None,
          progress: Callable[[int, int], None] | None = None) -> tuple[_C.Model, dict]:
    """The executor for a Hugging Face config and checkpoint; returns (model, facts about it)."""
    import importlib

    arch = architecture_of(config)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unsupported architecture {arch!r}: fastlm runs {', '.join(ARCHITECTURES)}")
    family = importlib.import_module(f"fastlm.models.{ARCHITECTURES[arch][1]}")
    return family.build(config, store, dtype, max_seq_len, progress)

"""GGUF -> a Hugging Face folder (config.json, model.safetensors, tokenizer files) that loads
without the GGUF, in fastlm and in transformers."""
from __future__ import annotations

import json
import os
from pathlib import Path

import ml_dtypes

from fastlm.formats import open_model, write_safetensors


def convert_gguf(src: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32") -> Path:
    """Writes the GGUF model at src as a Hugging Face folder at out (float32 or bfloat16 weights)."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    m = open_model(src)
    if m.gguf is None:
        raise ValueError(f"{m.path} is not a GGUF file: fastlm convert writes a GGUF model as a Hugging Face folder")
    config, store, tok = dict(m.config), m.store, m.tokenizer
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name in store.names():
        a = store.get(name)
        tensors[name] = a.astype(ml_dtypes.bfloat16) if dtype == "bfloat16" and a.ndim == 2 else a
    config["torch_dtype"] = dtype
    write_safetensors(out / "model.safetensors", tensors, {"format": "pt", "source": f"fastlm convert {Path(src).name}"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(m.generation_config, indent=2))
    tok.save(out)
    return out

"""GGUF -> a Hugging Face folder (config.json, model.safetensors, tokenizer files) that loads
without the GGUF, in fastlm and in transformers."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from fastlm.weights.gguf import GGUFFile, GGUFStore, llama_config, tokenizer_from_gguf

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float16): "F16",
              np.dtype(np.uint8): "U8"}


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """A .safetensors file: header (8-byte aligned), then each tensor's bytes; wider types first
    so that every tensor stays aligned to its element size in a memory map."""
    tensors = dict(sorted(tensors.items(), key=lambda kv: -kv[1].dtype.itemsize))
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, a in tensors.items():
        if a.dtype not in _ST_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} cannot be written")
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a).tobytes())


def convert_gguf(src: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32") -> Path:
    """Writes the GGUF model at src as a Hugging Face folder at out (float32 or bfloat16 weights)."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    f = GGUFFile(src)
    config = llama_config(f)
    store = GGUFStore(f, config["num_attention_heads"], config["num_key_value_heads"])
    tok, tok_config = tokenizer_from_gguf(f)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name in store.names():
        a = store.get(name)
        tensors[name] = a.astype(ml_dtypes.bfloat16) if dtype == "bfloat16" and a.ndim == 2 else a
    config["torch_dtype"] = dtype
    write_safetensors(out / "model.safetensors", tensors, {"format": "pt", "source": f"fastlm convert {Path(src).name}"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False))
    return out

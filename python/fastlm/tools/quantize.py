"""``fastlm quantize``: a quantized checkpoint that ``Engine.from_pretrained`` loads directly."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fastlm.formats import open_model, write_safetensors
from fastlm.formats.qrecords import FORMAT, FORMAT_VERSION
from fastlm.models import Loader, architecture_of, calibrate, family_of, llama
from fastlm.quant import QuantScheme


def write_quantized(src: str | os.PathLike, out: str | os.PathLike, dtype: str = "int8", group_size: int = 32, method: str = "rtn",
                    keep_8bit: tuple = (), progress=None, calib_progress=None):
    """Quantizes a Llama-family model (a Hugging Face folder or a GGUF file) into a folder that
    ``Engine.from_pretrained`` loads directly, memory-mapped, with no re-quantization: config.json
    (with a quantization_config), the tokenizer files, and model.safetensors whose linear layers,
    embedding and head are uint8 record tensors (see the module docstring), the rest float32. The
    safetensors metadata records the format, its version and each quantized tensor's kind.
    progress(done, total) follows the tensors, calib_progress the GPTQ calibration's layers."""
    scheme = QuantScheme(dtype, group_size=group_size, method=method, keep_8bit=keep_8bit)
    m = open_model(src)
    path, config, store, tok, gen = m.path, m.config, m.store, m.tokenizer, m.generation_config
    if m.quantized_dtype:
        raise ValueError(f"{path} is already quantized ({m.quantized_dtype}); quantize the float model")
    if family_of(config) is not llama:
        raise ValueError(f"fastlm quantize writes Llama-family models; {architecture_of(config)} can be quantized "
                         "at load instead")
    calibrate(scheme, config, store, tok, progress=calib_progress)
    ld = Loader(store, dtype, scheme)
    tensors: dict[str, np.ndarray] = {}
    names = store.names()
    for i, name in enumerate(names):
        shape = tuple(store.shape(name))
        if len(shape) == 2 and name.endswith(".weight") and "norm" not in name:
            rec = ld.records(name, shape, llama.projection_of(name), embedding=name in llama.EMBEDDINGS)
            tensors[name] = np.ascontiguousarray(rec[0]) if rec is not None else ld.f32(name, shape)
        else:
            tensors[name] = ld.f32(name)
        if progress:
            progress(i + 1, len(names))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # what ran, not what was asked: GPTQ runs only where a tensor is quantized from float (a 4-bit
    # GGUF's blocks are kept as they are, and the rest are rounded to nearest)
    if method == "gptq" and not scheme.hessians:
        method = "rtn"
    meta = {"version": FORMAT_VERSION, "dtype": dtype, "group_size": group_size, "method": method,
            "keep_8bit": list(scheme.keep_8bit), "tensors": {n: list(v) for n, v in ld.quantized.items()}}
    write_safetensors(out / "model.safetensors", tensors,
                      {"format": FORMAT, "quantization": json.dumps(meta), "source": str(path.name)})
    config = dict(config)
    config["quantization_config"] = {"quant_method": "fastlm", "dtype": dtype, "group_size": group_size,
                                     "method": method, "keep_8bit": list(scheme.keep_8bit),
                                     "format_version": FORMAT_VERSION}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if tok is not None:
        tok.save(out)
    return out

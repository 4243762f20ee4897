"""The architecture registry: a Hugging Face config (or GGUF metadata turned into one) and a
tensor store -> a spec, an executor and its weights. Each family is a module with a ``build``."""
from __future__ import annotations

from typing import Callable

from fastlm import _C
from fastlm.formats import Store
from fastlm.models import gpt2, llama, loader
from fastlm.models.executor import DEVICES, executor_class
from fastlm.models.loader import DTYPES, QUANT_DTYPES, WEIGHT_DTYPES, Loader, resolve_dtype
from fastlm.quant import QuantScheme, calibration_text, llama_hessians

FAMILIES = (llama, gpt2)
# architecture -> (its config's model_type, the family module that builds it)
ARCHITECTURES = {arch: (mt, fam) for fam in FAMILIES for arch, mt in fam.ARCHITECTURES.items()}


def architecture_of(config: dict) -> str:
    return loader.architecture_of(config, {a: mt for a, (mt, _) in ARCHITECTURES.items()})


def family_of(config: dict):
    """The family module that builds this config's architecture (ValueError if none does)."""
    arch = architecture_of(config)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unsupported architecture {arch!r}: fastlm runs {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch][1]


def build(config: dict, store: Store, dtype: str = "auto", max_seq_len: int | None = None,
          progress: Callable[[int, int], None] | None = None, scheme: QuantScheme | None = None,
          device: str = "cpu") -> tuple[_C.Model, dict]:
    """The executor for a Hugging Face config and checkpoint; returns (model, facts about it)."""
    return family_of(config).build(config, store, dtype, max_seq_len, progress, scheme, device)


def calibrate(scheme: QuantScheme, config: dict, store: Store, tokenizer, tokens: int = 2048, progress=None) -> None:
    """For GPTQ: arranges for the float model's linear-input statistics over `tokens` tokens of
    calibration text (fastlm.quant.calibration) to be computed when the first tensor needs them.
    Other methods need none."""
    if scheme.method != "gptq" or scheme.dtype != "int4":
        return
    if family_of(config) is not llama:
        raise ValueError("GPTQ calibration runs Llama-family models; use method 'search' for others")
    if tokenizer is None:
        raise ValueError("GPTQ calibration needs the model's tokenizer")
    scheme.calibration = lambda: llama_hessians(config, store, tokenizer.encode(calibration_text())[:tokens],
                                                progress=progress)


__all__ = ["ARCHITECTURES", "DEVICES", "DTYPES", "Loader", "QUANT_DTYPES", "WEIGHT_DTYPES", "architecture_of",
           "build", "calibrate", "executor_class", "family_of", "resolve_dtype"]

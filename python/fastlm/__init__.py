"""fastlm: fast LLM inference on CPUs, from Python.

>>> import fastlm
>>> fastlm.__version__
'0.1.0'

The names below load on first use (PEP 562), so ``import fastlm`` and ``fastlm --help`` do not pay
for NumPy, ml_dtypes and the tokenizers until something needs them.
"""
from __future__ import annotations

import importlib

from fastlm._runtime import get_isa, get_num_threads, set_isa, set_num_threads  # applies FASTLM_ISA / _NUM_THREADS
from fastlm._version import __version__

_EXPORTS = {
    "Engine": "fastlm.engine", "SamplingParams": "fastlm.sampling", "Stream": "fastlm.generation",
    "Completion": "fastlm.outputs", "Choice": "fastlm.outputs", "Chunk": "fastlm.outputs", "Logprob": "fastlm.outputs",
    "Usage": "fastlm.outputs", "Timings": "fastlm.outputs", "StructuredOutput": "fastlm.structured",
    "StructuredOutputError": "fastlm.structured",
}

__all__ = ["__version__", "get_isa", "set_isa", "get_num_threads", "set_num_threads"] + list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'fastlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

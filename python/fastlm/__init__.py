"""fastlm: fast LLM inference on CPUs, from Python.

>>> import fastlm
>>> fastlm.__version__
'0.1.0'
"""
from __future__ import annotations

from fastlm._runtime import get_isa, get_num_threads, set_isa, set_num_threads
from fastlm._version import __version__
from fastlm.engine import Engine
from fastlm.generation import Stream
from fastlm.outputs import Choice, Chunk, Completion, Logprob, Timings, Usage
from fastlm.sampling import SamplingParams

__all__ = ["__version__", "Engine", "SamplingParams", "Completion", "Choice", "Chunk", "Logprob", "Usage",
           "Timings", "Stream", "get_isa", "set_isa", "get_num_threads", "set_num_threads"]

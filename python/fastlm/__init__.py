"""fastlm: fast LLM inference on CPUs, from Python.

>>> import fastlm
>>> fastlm.__version__
'0.1.0'
"""
from __future__ import annotations

from fastlm._runtime import get_isa, get_num_threads, set_isa, set_num_threads
from fastlm.engine import Completion, Engine

__version__ = "0.1.0"

__all__ = ["__version__", "Engine", "Completion", "get_isa", "set_isa", "get_num_threads", "set_num_threads"]

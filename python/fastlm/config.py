"""Reading a model config (config.json, or GGUF metadata turned into one) field by field: every
size checked for type and range before anything is sized by it, every float for finiteness, so a
malformed file raises ConfigError naming the field instead of allocating gigabytes or running a
model half-understood.

>>> cfg_int({"hidden_size": 576}, "hidden_size", hi=1 << 16)
576
>>> cfg_int({"hidden_size": -1}, "hidden_size")
Traceback (most recent call last):
...
fastlm.config.ConfigError: config hidden_size = -1: must be an int in [1, 16777216]
"""
from __future__ import annotations

import math

MAX_SIZE = 1 << 24  # any one size: layers, widths, heads, vocabulary, positions
# what a user may ask a model for: weight dtypes and devices
WEIGHT_DTYPES = ("float32", "bfloat16")
QUANT_DTYPES = ("int8", "int4")
DTYPES = ("auto",) + WEIGHT_DTYPES + QUANT_DTYPES
DEVICES = ("cpu", "cuda", "cuda-emulated")
_REQUIRED = object()


class ConfigError(ValueError):
    """A model config field that is missing, of the wrong type, or out of range."""


def _get(config: dict, key: str, default):
    if key in config and config[key] is not None:
        return config[key]
    if default is _REQUIRED:
        raise ConfigError(f"config lacks {key}")
    return default


def cfg_int(config: dict, key: str, default=_REQUIRED, lo: int = 1, hi: int = MAX_SIZE) -> int:
    v = _get(config, key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"config {key} = {v!r}: must be an int in [{lo}, {hi}]")
    return v


def cfg_float(config: dict, key: str, default=_REQUIRED, lo: float = -math.inf, hi: float = math.inf,
              positive: bool = False) -> float:
    v = _get(config, key, default)
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi
    if not ok or (positive and v <= 0):
        bounds = f" in [{lo}, {hi}]" if math.isfinite(lo) or math.isfinite(hi) else ""
        raise ConfigError(f"config {key} = {v!r}: must be a finite number{' > 0' if positive else ''}{bounds}")
    return float(v)


def cfg_bool(config: dict, key: str, default: bool = False) -> bool:
    v = _get(config, key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"config {key} = {v!r}: must be true or false")
    return v


def cfg_dict(config: dict, key: str) -> dict | None:
    v = config.get(key)
    if v is not None and not isinstance(v, dict):
        raise ConfigError(f"config {key} = {v!r}: must be an object or null")
    return v

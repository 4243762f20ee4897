"""Rotary position frequencies from a Hugging Face config: the base (``rope_theta``, or
``rope_parameters`` in transformers 5) and "linear" / "llama3" scaling, computed as transformers
computes them in float32.

>>> inv_freq({"rope_theta": 10000.0}, 4).tolist()
[1.0, 0.009999999776482582]
"""
from __future__ import annotations

import math

import numpy as np

from fastlm.config import ConfigError, cfg_dict, cfg_float


def rope_theta(config: dict) -> float:
    """transformers 5 keeps the base in rope_parameters; older configs at the top level."""
    params = cfg_dict(config, "rope_parameters") or {}
    if "rope_theta" in params:
        return cfg_float(params, "rope_theta", positive=True)
    return cfg_float(config, "rope_theta", 10000.0, positive=True)


def rope_scaling(config: dict) -> dict | None:
    params = cfg_dict(config, "rope_parameters") or {}
    scaling = cfg_dict(config, "rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return None
    if kind in ("linear", "llama3"):
        cfg_float(scaling, "factor", positive=True)
    if kind == "llama3":
        low = cfg_float(scaling, "low_freq_factor", positive=True)
        high = cfg_float(scaling, "high_freq_factor", positive=True)
        cfg_float(scaling, "original_max_position_embeddings", positive=True)
        if high <= low:
            raise ConfigError(f"config rope_scaling: high_freq_factor ({high}) must exceed low_freq_factor ({low})")
    return dict(scaling, rope_type=kind)


def inv_freq(config: dict, rotary_dim: int) -> np.ndarray:
    """1 / theta^(2i / d), as Hugging Face computes it in float32, with "linear" or "llama3" scaling;
    a GGUF's rope_freqs.weight (config "rope_freq_factors") divides each frequency, as llama.cpp does."""
    freq = _inv_freq(config, rotary_dim)
    factors = config.get("rope_freq_factors")
    if factors is None:
        return freq
    factors = np.asarray(factors, dtype=np.float32)
    if factors.shape != freq.shape:
        raise ConfigError(f"config rope_freq_factors has {factors.size} values, the rotary dimensions need {freq.size}")
    return (freq / factors).astype(np.float32)


def _inv_freq(config: dict, rotary_dim: int) -> np.ndarray:
    base = rope_theta(config)
    exponents = np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dim)
    freq = (1.0 / (np.float64(base) ** exponents.astype(np.float64))).astype(np.float32)
    scaling = rope_scaling(config)
    if scaling is None:
        return freq
    kind = scaling["rope_type"]
    if kind == "linear":
        return (freq / np.float32(scaling["factor"])).astype(np.float32)
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / freq
        scaled = np.where(wavelen > low_wavelen, freq / factor, freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise ValueError(f"rope_scaling type {kind!r} is not supported (default, linear and llama3 are)")

"""Rotary position frequencies from a Hugging Face config: the base (``rope_theta``, or
``rope_parameters`` in transformers 5) and "linear" / "llama3" / "longrope" scaling, computed as
transformers computes them in float32 (LongRoPE with its short factors and attention factor:
contexts up to original_max_position_embeddings, where transformers uses the same).

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
    if kind == "su":  # LongRoPE's first name
        kind = "longrope"
    if kind in ("linear", "llama3"):
        cfg_float(scaling, "factor", positive=True)
    if kind == "longrope":
        for name in ("short_factor", "long_factor"):
            v = scaling.get(name)
            if not (isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                      and x > 0 for x in v)):
                raise ConfigError(f"config rope_scaling {name} must be a list of positive numbers, got {v!r}"[:200])
        # the config's own field first, as transformers' Phi3Config reads it (Phi-3.5's configs have it only there)
        orig = config.get("original_max_position_embeddings", scaling.get("original_max_position_embeddings"))
        if not (isinstance(orig, int) and not isinstance(orig, bool) and orig > 0):
            raise ConfigError(f"config LongRoPE needs original_max_position_embeddings (a positive int), got {orig!r}")
        scaling = dict(scaling, original_max_position_embeddings=orig)
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
    if kind == "longrope":  # the short factors: the context stays within original_max_position_embeddings
        short = np.asarray(scaling["short_factor"], dtype=np.float32)
        if short.shape != freq.shape:
            raise ConfigError(f"config rope_scaling short_factor has {short.size} values, the rotary dimensions "
                              f"need {freq.size}")
        exponents = np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dim)
        return (np.float32(1) / (short * np.float32(base) ** exponents)).astype(np.float32)
    raise ValueError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3 and longrope are)")


def attention_factor(config: dict) -> float:
    """LongRoPE's scale of cos and sin (1 for every other rope): its attention_factor, else
    sqrt(1 + ln(s) / ln(original context)) for s = max_position_embeddings / original context."""
    scaling = rope_scaling(config)
    if scaling is None or scaling["rope_type"] != "longrope":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return cfg_float(scaling, "attention_factor", positive=True)
    orig = scaling["original_max_position_embeddings"]
    factor = scaling.get("factor") or config.get("max_position_embeddings", orig) / orig
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))


def longrope_context(config: dict) -> int | None:
    """The context LongRoPE's short factors hold (original_max_position_embeddings), or None."""
    scaling = rope_scaling(config)
    return scaling["original_max_position_embeddings"] if scaling and scaling["rope_type"] == "longrope" else None

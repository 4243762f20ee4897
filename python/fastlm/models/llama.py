"""The Llama family: Llama 2/3 (rope_scaling "llama3"), Mistral, Qwen2 (q/k/v biases), SmolLM2,
TinyLlama. RMSNorm, rotary positions, SwiGLU, grouped-query attention, tied or untied head."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from fastlm import _C
from fastlm.models import Loader, architecture_of, executor_class, resolve_dtype
from fastlm.weights import TensorStore


def rope_theta(config: dict) -> float:
    """transformers 5 keeps the base in rope_parameters; older configs at the top level."""
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def rope_scaling(config: dict) -> dict | None:
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    return None if kind == "default" else dict(scaling, rope_type=kind)


def inv_freq(config: dict, rotary_dim: int) -> np.ndarray:
    """1 / theta^(2i / d), as Hugging Face computes it in float32, with "linear" or "llama3" scaling."""
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


def build(config: dict, store: TensorStore, dtype: str, max_seq_len: int | None,
          progress: Callable[[int, int], None] | None, scheme=None, device: str = "cpu") -> tuple[_C.Model, dict]:
    arch = architecture_of(config)
    C = int(config["hidden_size"])
    L = int(config["num_hidden_layers"])
    H = int(config["num_attention_heads"])
    Hkv = int(config.get("num_key_value_heads") or H)
    D = int(config.get("head_dim") or C // H)
    F = int(config["intermediate_size"])
    V = int(config["vocab_size"])
    context = int(config.get("max_position_embeddings", 2048))
    if arch == "MistralForCausalLM" and config.get("sliding_window"):
        # positions beyond the window would attend differently: stay within it
        context = min(context, int(config["sliding_window"]))
    max_seq = int(max_seq_len or context)
    if max_seq < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq}")
    linear_names = ["model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"]
    wdtype = resolve_dtype(dtype, store, linear_names)
    spec = {
        "n_layers": L, "hidden": C, "n_heads": H, "n_kv_heads": Hkv, "head_dim": D, "ffn": F, "vocab": V,
        "max_seq": max_seq, "norm": "rms", "norm_eps": float(config.get("rms_norm_eps", 1e-6)), "mlp": "swiglu",
        "pos": "rope", "rope_inv_freq": inv_freq(config, D), "rotary_dim": D,
    }
    model = executor_class(device)(spec)
    ld = Loader(store, wdtype, scheme)
    qkv_bias = arch == "Qwen2ForCausalLM" or bool(config.get("attention_bias", False))
    o_bias = bool(config.get("attention_bias", False)) and arch != "Qwen2ForCausalLM"
    mlp_bias = bool(config.get("mlp_bias", False))
    shapes = {"q": (H * D, C), "k": (Hkv * D, C), "v": (Hkv * D, C), "o": (C, H * D), "gate": (F, C), "up": (F, C),
              "down": (C, F)}
    for i in range(L):
        p = f"model.layers.{i}."
        for name, hf in (("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"),
                         ("o", "self_attn.o_proj"), ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"),
                         ("down", "mlp.down_proj")):
            has_bias = (name in "qkv" and qkv_bias) or (name == "o" and o_bias) or (name in ("gate", "up", "down") and mlp_bias)
            bias = ld.f32(p + hf + ".bias", (shapes[name][0],)) if has_bias else None
            ld.set_linear(model, i, name, p + hf + ".weight", shapes[name], bias)
        model.set_norm(i, 0, ld.f32(p + "input_layernorm.weight", (C,)))
        model.set_norm(i, 1, ld.f32(p + "post_attention_layernorm.weight", (C,)))
        if progress:
            progress(i + 1, L)
    model.set_norm(-1, 0, ld.f32("model.norm.weight", (C,)))
    ld.set_vocab_matrix(model, "embedding", "model.embed_tokens.weight", (V, C))
    tied = bool(config.get("tie_word_embeddings", False)) or "lm_head.weight" not in store
    if tied:
        model.tie_lm_head()
    else:
        ld.set_vocab_matrix(model, "lm_head", "lm_head.weight", (V, C))
    missing = model.missing()
    if missing:
        raise ValueError(f"the checkpoint lacks weights for: {', '.join(missing)}")
    return model, {"architecture": arch, "dtype": wdtype, "context": max_seq, "tied": tied,
                   "quantized": dict(ld.quantized), "scheme": ld.scheme}

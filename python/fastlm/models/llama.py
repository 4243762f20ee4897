"""The Llama family: Llama 2/3 (rope_scaling "llama3"), Mistral (sliding window), Qwen2 (q/k/v
biases), Qwen3 (an RMSNorm over each q and k head before rope), Phi-3 (q|k|v and gate|up fused in
the checkpoint, partial rotary, sliding window), SmolLM2, TinyLlama, and Gemma 2 / 3 (RMSNorm with
1 + w, scaled embeddings, GeGLU, norms after attention and MLP too, soft-capped scores and logits,
query_pre_attn_scalar, sliding and global layers with their own rope, q/k norms in Gemma 3).
RMSNorm, rotary positions, gated MLP, grouped-query attention, tied or untied head."""
from __future__ import annotations

import math
from typing import Callable

import ml_dtypes
import numpy as np

from fastlm import _C
from fastlm.config import ConfigError, cfg_bool, cfg_dict, cfg_float, cfg_int
from fastlm.formats import Store
from fastlm.models.executor import executor_class
from fastlm.models.loader import (
    MAX_HEAD_DIM,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_VOCAB,
    MAX_WIDTH,
    Loader,
    architecture_of,
    check_layer_count,
    resolve_dtype,
    tied_head,
)
from fastlm.rope import attention_factor, inv_freq, longrope_context

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
                 "Qwen3ForCausalLM": "qwen3", "Phi3ForCausalLM": "phi3", "Gemma2ForCausalLM": "gemma2",
                 "Gemma3ForCausalLM": "gemma3_text"}
GEMMA = ("Gemma2ForCausalLM", "Gemma3ForCausalLM")
# the executor's projections -> their tensor names in a decoder layer
LINEAR_NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")


def projection_of(name: str) -> str | None:
    """The projection ("q" ... "down") a tensor name holds the weight of, else None."""
    return next((p for p, part in LINEAR_NAMES.items() if f".{part}.weight" in name), None)


def rotary_dim(config: dict, head_dim: int) -> int:
    """The dimensions of each head that rotate: partial_rotary_factor of head_dim (Phi-3's, in
    rope_parameters in transformers 5 or at the top level), all of them by default."""
    params = cfg_dict(config, "rope_parameters") or {}
    source = params if "partial_rotary_factor" in params else config
    factor = cfg_float(source, "partial_rotary_factor", 1.0, lo=0, hi=1)
    r = int(head_dim * factor)
    if r < 2 or r % 2:
        raise ConfigError(f"config partial_rotary_factor={factor} rotates {r} of {head_dim} dimensions: "
                          "an even number of at least 2 is needed")
    return r


# a layer's norms by the executor's index (0 before attention, 1 before the MLP, 2 / 3 on q / k
# heads, 4 / 5 on the attention / MLP outputs)
LLAMA_NORMS = {0: "input_layernorm.weight", 1: "post_attention_layernorm.weight", 2: "self_attn.q_norm.weight",
               3: "self_attn.k_norm.weight"}
GEMMA_NORMS = {0: "input_layernorm.weight", 1: "pre_feedforward_layernorm.weight", 2: "self_attn.q_norm.weight",
               3: "self_attn.k_norm.weight", 4: "post_attention_layernorm.weight",
               5: "post_feedforward_layernorm.weight"}


def layer_types(config: dict, arch: str, n_layers: int) -> list[str]:
    """Each layer's "sliding_attention" or "full_attention": the config's layer_types, else the
    pattern transformers derives (Gemma 2 alternates; Gemma 3 has one global layer in
    sliding_window_pattern)."""
    types = config.get("layer_types")
    if types is None:
        every = 2 if arch == "Gemma2ForCausalLM" else cfg_int(config, "sliding_window_pattern",
                                                               cfg_int(config, "_sliding_window_pattern", 6))
        types = ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(n_layers)]
    if not (isinstance(types, list) and len(types) == n_layers and
            all(t in ("sliding_attention", "full_attention") for t in types)):
        raise ConfigError(f"config layer_types must list 'sliding_attention' or 'full_attention' for each of the "
                          f"{n_layers} layers, got {types!r}"[:300])
    return types


def gemma_spec(config: dict, arch: str, L: int, C: int, D: int, R: int, window: int, wdtype: str) -> dict:
    """The executor spec's Gemma fields, from the config; a field that changes the math and has no
    code here is refused by name."""
    act = config.get("hidden_activation", config.get("hidden_act"))
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ConfigError(f"config hidden_activation={act!r} is not supported for {arch} (gelu_pytorch_tanh is)")
    if config.get("use_bidirectional_attention"):
        raise ConfigError(f"config use_bidirectional_attention=true is not supported for {arch}")
    types = layer_types(config, arch, L)
    params = cfg_dict(config, "rope_parameters") or {}
    if "sliding_attention" in params or "full_attention" in params:  # transformers 5: rope per layer type
        freq = {t: inv_freq({"rope_parameters": cfg_dict(params, t)}, R) for t in set(types)}
    elif "rope_local_base_freq" in config:  # Gemma 3 before transformers 5: local base, global rope_theta / scaling
        local = {"rope_theta": cfg_float(config, "rope_local_base_freq", positive=True)}
        freq = {"sliding_attention": inv_freq(local, R), "full_attention": inv_freq(config, R)}
    else:
        freq = {t: inv_freq(config, R) for t in set(types)}
    scale = np.float32(math.sqrt(C))
    if wdtype == "bfloat16" and not config.get("from_gguf"):
        # transformers scales in the weights' dtype: sqrt(3072) is 55.5 in bf16 (llama.cpp in float32)
        scale = np.float32(ml_dtypes.bfloat16(scale))
    qpas = cfg_float(config, "query_pre_attn_scalar", float(D), positive=True)
    soft = {name: cfg_float(config, name, 0.0, lo=0) if config.get(name) is not None else 0.0
            for name in ("attn_logit_softcapping", "final_logit_softcapping")}
    return {"post_norms": True, "gelu_gate": True, "embed_scale": float(scale), "attn_scale": qpas ** -0.5,
            "attn_softcap": soft["attn_logit_softcapping"], "final_softcap": soft["final_logit_softcapping"],
            "layer_window": [window if t == "sliding_attention" else 0 for t in types],
            "layer_rope_inv_freq": [freq[t] for t in types]}


def build(config: dict, store: Store, dtype: str, max_seq_len: int | None,
          progress: Callable[[int, int], None] | None, scheme=None, device: str = "cpu") -> tuple[_C.Model, dict]:
    arch = architecture_of(config, ARCHITECTURES)
    C = cfg_int(config, "hidden_size", hi=MAX_WIDTH)
    L = cfg_int(config, "num_hidden_layers", hi=MAX_LAYERS)
    H = cfg_int(config, "num_attention_heads", hi=MAX_HEADS)
    Hkv = cfg_int(config, "num_key_value_heads", H, hi=H)
    if H % Hkv:
        raise ConfigError(f"config num_attention_heads ({H}) must be a multiple of num_key_value_heads ({Hkv})")
    D = cfg_int(config, "head_dim", C // H or 1, hi=MAX_HEAD_DIM)
    F = cfg_int(config, "intermediate_size", hi=MAX_WIDTH)
    V = cfg_int(config, "vocab_size", hi=MAX_VOCAB)
    context = cfg_int(config, "max_position_embeddings", 2048)
    window = cfg_int(config, "sliding_window", 0, lo=0)
    if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") and cfg_bool(config, "use_sliding_window") and window:
        # some layers would attend through a window only: not run half-understood
        raise ConfigError(f"config use_sliding_window=true (sliding_window={window}, max_window_layers="
                          f"{config.get('max_window_layers')}) is not supported for {arch}")
    short = longrope_context(config)
    if short is not None:  # LongRoPE: its short factors up to the original context, as transformers there
        if max_seq_len is not None and max_seq_len > short:
            raise ConfigError(f"max_seq_len={max_seq_len} passes LongRoPE's original_max_position_embeddings={short}, "
                              "where transformers switches to long_factor: not supported yet")
        context = min(context, short)
    max_seq = max_seq_len or context
    # Mistral and Phi-3 attend through a sliding window: position p sees keys p - W + 1 .. p
    window = window if arch in ("MistralForCausalLM", "Phi3ForCausalLM", *GEMMA) and window < max_seq else 0
    check_layer_count(store, "model.layers.", L)
    R = rotary_dim(config, D)
    interleaved = False
    if getattr(store, "qk_permuted", False):  # a llama GGUF: Q and K taken as stored (no copy), rope on interleaved pairs
        store, interleaved = store.rope_interleaved(), True
    fused = arch == "Phi3ForCausalLM"  # self_attn.qkv_proj and mlp.gate_up_proj, cut here
    first = "self_attn.qkv_proj" if fused else "self_attn.q_proj"
    linear_names = [f"model.layers.0.{first}.weight", "model.embed_tokens.weight"]
    wdtype = resolve_dtype(dtype, store, linear_names)
    spec = {
        "n_layers": L, "hidden": C, "n_heads": H, "n_kv_heads": Hkv, "head_dim": D, "ffn": F, "vocab": V,
        "max_seq": max_seq, "norm": "rms", "norm_eps": cfg_float(config, "rms_norm_eps", 1e-6, lo=0, hi=1),
        "mlp": "swiglu",
        "pos": "rope", "rope_inv_freq": inv_freq(config, R), "rotary_dim": R, "rope_interleaved": interleaved,
        "qk_norm": arch in ("Qwen3ForCausalLM", "Gemma3ForCausalLM"), "sliding_window": window,
        "rope_attention_factor": attention_factor(config),
    }
    gemma = arch in GEMMA
    # Gemma's norms scale by 1 + w; a GGUF holds them with the 1 added already (llama.cpp's converter)
    shift = np.float32(1) if gemma and not config.get("from_gguf") else None
    if gemma:
        spec.update(gemma_spec(config, arch, L, C, D, R, window, wdtype))  # windows per layer
    model = executor_class(device)(spec)
    ld = Loader(store, wdtype, scheme)
    attention_bias = cfg_bool(config, "attention_bias")
    qkv_bias = arch == "Qwen2ForCausalLM" or attention_bias
    o_bias = attention_bias and arch != "Qwen2ForCausalLM"
    mlp_bias = cfg_bool(config, "mlp_bias")
    shapes = {"q": (H * D, C), "k": (Hkv * D, C), "v": (Hkv * D, C), "o": (C, H * D), "gate": (F, C), "up": (F, C),
              "down": (C, F)}
    for i in range(L):
        p = f"model.layers.{i}."
        if fused:
            qkv = (H * D + 2 * Hkv * D, C)
            for name, rows in (("q", slice(0, H * D)), ("k", slice(H * D, (H + Hkv) * D)), ("v", slice((H + Hkv) * D, None))):
                ld.set_linear_rows(model, i, name, p + "self_attn.qkv_proj.weight", qkv, rows)
            for name, rows in (("gate", slice(0, F)), ("up", slice(F, None))):
                ld.set_linear_rows(model, i, name, p + "mlp.gate_up_proj.weight", (2 * F, C), rows)
        for name, hf in LINEAR_NAMES.items():
            if fused and name in ("q", "k", "v", "gate", "up"):
                continue
            has_bias = (name in "qkv" and qkv_bias) or (name == "o" and o_bias) or (name in ("gate", "up", "down") and mlp_bias)
            bias = ld.f32(p + hf + ".bias", (shapes[name][0],)) if has_bias else None
            ld.set_linear(model, i, name, p + hf + ".weight", shapes[name], bias)
        norms = GEMMA_NORMS if gemma else LLAMA_NORMS
        for which, name in norms.items():
            if which in (2, 3) and not spec["qk_norm"]:
                continue
            w = ld.f32(p + name, (D if which in (2, 3) else C,))
            model.set_norm(i, which, w + shift if shift else w)  # Gemma scales by 1 + w
        ld.release()  # this layer's file pages: copied into the executor
        if progress:
            progress(i + 1, L)
    final = ld.f32("model.norm.weight", (C,))
    model.set_norm(-1, 0, final + shift if shift else final)
    tied = tied_head(config, store, "lm_head.weight")
    embed = "model.embed_tokens.weight"
    if tied and hasattr(model, "tie_embedding") and ld.keeps_float(embed):
        # the CPU executor packs a float head once and reads embedding rows from it: set it so,
        # without a copy of the embedding first (which would briefly hold the matrix three times)
        ld.set_vocab_matrix(model, "lm_head", embed, (V, C))
        model.tie_embedding()
    else:
        ld.set_vocab_matrix(model, "embedding", embed, (V, C))
        if tied:
            model.tie_lm_head()
        else:
            ld.set_vocab_matrix(model, "lm_head", "lm_head.weight", (V, C))
    missing = model.missing()
    if missing:
        raise ValueError(f"the checkpoint lacks weights for: {', '.join(missing)}")
    ld.release()
    return model, {"architecture": arch, "dtype": wdtype, "context": max_seq, "tied": tied,
                   "quantized": dict(ld.quantized), "scheme": ld.scheme, "sliding_window": window}

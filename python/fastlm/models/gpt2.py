"""GPT-2: learned positions, LayerNorm, Conv1D weights stored (in, out), gelu_new, tied head."""
from __future__ import annotations

from typing import Callable

from fastlm import _C
from fastlm.config import ConfigError, cfg_float, cfg_int
from fastlm.formats import Store
from fastlm.models.executor import executor_class
from fastlm.models.loader import MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, Loader, check_layer_count, resolve_dtype

ARCHITECTURES = {"GPT2LMHeadModel": "gpt2"}


def build(config: dict, store: Store, dtype: str, max_seq_len: int | None,
          progress: Callable[[int, int], None] | None, scheme=None, device: str = "cpu") -> tuple[_C.Model, dict]:
    C = cfg_int(config, "n_embd", hi=MAX_WIDTH)
    L = cfg_int(config, "n_layer", hi=MAX_LAYERS)
    H = cfg_int(config, "n_head", hi=MAX_HEADS)
    if C % H:
        raise ConfigError(f"config n_embd ({C}) must be a multiple of n_head ({H})")
    F = cfg_int(config, "n_inner", 4 * C, hi=MAX_WIDTH)
    V = cfg_int(config, "vocab_size", hi=MAX_VOCAB)
    P = cfg_int(config, "n_positions", 1024)
    act = config.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"GPT-2 activation {act!r} is not supported (gelu_new is)")
    max_seq = max_seq_len or P
    if not 1 <= max_seq <= P:
        raise ValueError(f"max_seq_len must be in [1, {P}] (GPT-2 has {P} learned positions), got {max_seq}")
    prefix = "transformer." if "transformer.wte.weight" in store else ""
    check_layer_count(store, prefix + "h.", L)
    wdtype = resolve_dtype(dtype, store, [prefix + "wte.weight"])
    spec = {"n_layers": L, "hidden": C, "n_heads": H, "n_kv_heads": H, "head_dim": C // H, "ffn": F, "vocab": V,
            "max_seq": max_seq, "norm": "layer", "norm_eps": cfg_float(config, "layer_norm_epsilon", 1e-5, lo=0, hi=1),
            "mlp": "gelu", "pos": "learned"}
    model = executor_class(device)(spec)
    ld = Loader(store, wdtype, scheme)
    if getattr(store, "stored_format", None) is not None and getattr(store, "quantized_dtype", None):
        raise ValueError("quantized checkpoints hold Llama-family models; quantize GPT-2 at load (dtype='int8')")
    for i in range(L):
        p = f"{prefix}h.{i}."
        # c_attn is a Conv1D: weight (C, 3C) = [q | k | v] along its output axis
        w = ld.raw(p + "attn.c_attn.weight", (C, 3 * C))
        b = ld.f32(p + "attn.c_attn.bias", (3 * C,))
        for j, name in enumerate("qkv"):
            ld.set_linear_part(model, i, name, p + "attn.c_attn.weight", w[:, j * C:(j + 1) * C].T,
                               b[j * C:(j + 1) * C].copy())
        ld.set_linear(model, i, "o", p + "attn.c_proj.weight", (C, C), ld.f32(p + "attn.c_proj.bias", (C,)),
                      transpose=True)
        ld.set_linear(model, i, "up", p + "mlp.c_fc.weight", (F, C), ld.f32(p + "mlp.c_fc.bias", (F,)), transpose=True)
        ld.set_linear(model, i, "down", p + "mlp.c_proj.weight", (C, F), ld.f32(p + "mlp.c_proj.bias", (C,)),
                      transpose=True)
        model.set_norm(i, 0, ld.f32(p + "ln_1.weight", (C,)), ld.f32(p + "ln_1.bias", (C,)))
        model.set_norm(i, 1, ld.f32(p + "ln_2.weight", (C,)), ld.f32(p + "ln_2.bias", (C,)))
        ld.release()  # this layer's file pages: copied into the executor
        if progress:
            progress(i + 1, L)
    model.set_norm(-1, 0, ld.f32(prefix + "ln_f.weight", (C,)), ld.f32(prefix + "ln_f.bias", (C,)))
    ld.set_vocab_matrix(model, "embedding", prefix + "wte.weight", (V, C))
    model.set_position_embedding(ld.f32(prefix + "wpe.weight", (P, C)))
    model.tie_lm_head()
    missing = model.missing()
    if missing:
        raise ValueError(f"the checkpoint lacks weights for: {', '.join(missing)}")
    ld.release()
    return model, {"architecture": "GPT2LMHeadModel", "dtype": wdtype, "context": max_seq, "tied": True,
                   "quantized": dict(ld.quantized), "scheme": ld.scheme}


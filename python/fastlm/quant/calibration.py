"""Calibration for 4-bit quantization: the float model runs over ordinary text (NumPy and fastlm's
kernels, one layer at a time) and each linear layer's input statistics H = sum x^T x are kept, for
GPTQ (fastlm.quant.gptq) to place each weight's rounding error where the inputs are small.

The default text is the docstrings of Python's standard library (present wherever Python is; not
the ``pydoc_data`` reference pages that benchmarks/quantized.py evaluates on).
"""
from __future__ import annotations

import importlib
import inspect

import numpy as np

from fastlm import kernels
from fastlm.rope import inv_freq

STDLIB_MODULES = ["abc", "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib",
                  "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions",
                  "functools", "glob", "gzip", "hashlib", "heapq", "html", "http.client", "io", "itertools",
                  "json", "logging", "math", "os", "pathlib", "pickle", "queue", "random", "re", "shutil",
                  "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
                  "threading", "time", "typing", "unittest", "urllib.parse", "uuid", "zipfile"]


def calibration_text(min_chars: int = 40000) -> str:
    """Docstrings of standard-library modules, classes and functions: plain technical English."""
    parts: list[str] = []
    total = 0
    for name in STDLIB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - a trimmed Python
            continue
        for obj in [mod] + [v for _, v in sorted(vars(mod).items()) if inspect.isclass(v) or inspect.isfunction(v)]:
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 200:
                parts.append(doc)
                total += len(doc)
        if total >= min_chars:
            break
    return "\n\n".join(parts)


def llama_hessians(config: dict, store, ids: list[int], window: int = 512, progress=None) -> dict[str, np.ndarray]:
    """{tensor name: H (K, K) float32} for every linear weight of a Llama-family model, from the
    float model run over `ids` in windows of `window` tokens (q/k/v share one H, gate/up another)."""
    C = int(config["hidden_size"])
    L = int(config["num_hidden_layers"])
    H = int(config["num_attention_heads"])
    Hkv = int(config.get("num_key_value_heads") or H)
    D = int(config.get("head_dim") or C // H)
    eps = float(config.get("rms_norm_eps", 1e-6))
    freqs = inv_freq(config, D)

    def f32(name):
        return np.ascontiguousarray(store.get(name), dtype=np.float32)

    emb = f32("model.embed_tokens.weight")
    xs = [emb[np.asarray(ids[s:s + window])] for s in range(0, len(ids), window) if len(ids[s:s + window]) > 1]
    out: dict[str, np.ndarray] = {}
    for i in range(L):
        p = f"model.layers.{i}."
        w = {n: f32(p + n + ".weight") for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                 "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
        bias = {n: f32(p + n + ".bias") if (p + n + ".bias") in store else None
                for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")}
        g1, g2 = f32(p + "input_layernorm.weight"), f32(p + "post_attention_layernorm.weight")
        h_in = np.zeros((C, C))
        h_o = np.zeros((H * D, H * D))
        h_mlp = np.zeros((C, C))
        F = w["mlp.down_proj"].shape[1]
        h_down = np.zeros((F, F))
        for j, x in enumerate(xs):
            T = x.shape[0]
            h = kernels.rms_norm(x, g1, eps)
            h_in += h.T.astype(np.float64) @ h
            q = kernels.matmul(h, w["self_attn.q_proj"], bias["self_attn.q_proj"])
            k = kernels.matmul(h, w["self_attn.k_proj"], bias["self_attn.k_proj"])
            v = kernels.matmul(h, w["self_attn.v_proj"], bias["self_attn.v_proj"])
            q = kernels.rope(q.reshape(T, H, D), inv_freq=freqs)
            k = kernels.rope(k.reshape(T, Hkv, D), inv_freq=freqs)
            a = kernels.attention(np.ascontiguousarray(q.transpose(1, 0, 2)), np.ascontiguousarray(k.transpose(1, 0, 2)),
                                  np.ascontiguousarray(v.reshape(T, Hkv, D).transpose(1, 0, 2)), causal=True)
            a = np.ascontiguousarray(a.transpose(1, 0, 2).reshape(T, H * D))
            h_o += a.T.astype(np.float64) @ a
            x = x + kernels.matmul(a, w["self_attn.o_proj"])
            h2 = kernels.rms_norm(x, g2, eps)
            h_mlp += h2.T.astype(np.float64) @ h2
            m = kernels.silu_mul(kernels.matmul(h2, w["mlp.gate_proj"]), kernels.matmul(h2, w["mlp.up_proj"]))
            h_down += m.T.astype(np.float64) @ m
            xs[j] = x + kernels.matmul(m, w["mlp.down_proj"])
        for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            out[p + n + ".weight"] = h_in.astype(np.float32)
        out[p + "self_attn.o_proj.weight"] = h_o.astype(np.float32)
        out[p + "mlp.gate_proj.weight"] = out[p + "mlp.up_proj.weight"] = h_mlp.astype(np.float32)
        out[p + "mlp.down_proj.weight"] = h_down.astype(np.float32)
        if progress:
            progress(i + 1, L)
    return out

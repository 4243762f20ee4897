"""Every kernel against torch on SmolLM2-135M's shapes (hidden 576, MLP 1536, vocab 49152,
9 heads / 3 KV heads, head dim 64) and a square GEMM."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import interleaved, record
from fastlm import kernels as K


def run(benchmark, impl: str, calls: dict) -> None:
    """pytest-benchmark times `impl`; the group's last test also times every impl interleaved
    (conftest.interleaved) and records those medians, from which report.py takes the ratios."""
    benchmark(calls[impl])
    if impl == list(calls)[-1] or (impl == "torch-dynamic-int8" and "torch-int_mm" not in calls):
        benchmark.extra_info["interleaved_s"] = interleaved(calls)

GEMM = [(512, 576, 1536), (512, 1536, 576), (1024, 1024, 1024)]
GEMV = [(1, 576, 49152), (1, 576, 1536), (1, 1536, 576)]


# ---- fp32 GEMM (prefill) ----
@pytest.mark.parametrize("impl", ["fastlm", "fastlm-packed", "torch"])
@pytest.mark.parametrize("M,K_,N", GEMM, ids=lambda v: str(v))
def test_gemm(benchmark, rng, impl, M, K_, N):
    benchmark.group = f"gemm fp32 {M}x{K_}x{N}"
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32)
    record(benchmark, impl, 2.0 * M * K_ * N, "GFLOP/s")
    xt, wt, pw = torch.from_numpy(x), torch.from_numpy(w), K.pack(w)
    out = np.empty((M, N), np.float32)
    calls = {"fastlm": lambda: K.matmul(x, w, out=out), "fastlm-packed": lambda: K.matmul(x, pw, out=out),
             "torch": lambda: torch.matmul(xt, wt.T)}
    run(benchmark, impl, calls)


# ---- GEMV (decode), fp32 and bf16 weights ----
@pytest.mark.parametrize("impl", ["fastlm", "fastlm-packed", "torch"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("M,K_,N", GEMV, ids=lambda v: str(v))
def test_gemv(benchmark, rng, impl, dtype, M, K_, N):
    benchmark.group = f"gemv {dtype} {M}x{K_}x{N}"
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32)
    if dtype == "bf16":
        w = w.astype(ml_dtypes.bfloat16)
    record(benchmark, impl, float(w.nbytes), "GB/s")
    xt = torch.from_numpy(x)
    wt = torch.from_numpy(w.view(np.int16)).view(torch.bfloat16) if dtype == "bf16" else torch.from_numpy(w)
    if dtype == "bf16":
        xt = xt.bfloat16()
    pw = K.pack(w)
    out = np.empty((M, N), np.float32)
    calls = {"fastlm": lambda: K.matmul(x, w, out=out), "fastlm-packed": lambda: K.matmul(x, pw, out=out),
             "torch": lambda: F.linear(xt, wt)}
    run(benchmark, impl, calls)


@pytest.mark.parametrize("impl", ["fastlm-q4", "fastlm-q8", "fastlm-fp32", "torch-dynamic-int8", "torch-fp32"])
@pytest.mark.parametrize("M,K_,N", [(1, 576, 49152), (1, 576, 1536), (1, 1536, 576), (512, 576, 1536)],
                         ids=lambda v: str(v))
def test_q_matmul(benchmark, rng, impl, M, K_, N):
    benchmark.group = f"quantized matmul {M}x{K_}x{N}"
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32)
    q8, q4 = K.q_quantize(w, "q8", 32), K.q_quantize(w, "q4", 32)
    nbytes = {"fastlm-q4": q4.nbytes, "fastlm-q8": q8.nbytes, "torch-dynamic-int8": N * K_}
    record(benchmark, impl, float(nbytes.get(impl, w.nbytes)) if M == 1 else 2.0 * M * K_ * N,
           "GB/s" if M == 1 else "GFLOP/s")
    out = np.empty((M, N), np.float32)
    pw = K.pack(w)
    lin = torch.nn.Linear(K_, N, bias=False)
    lin.weight.data = torch.from_numpy(w)
    dq = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)

    def dynamic():
        with torch.no_grad():
            return dq(xt)
    calls = {"fastlm-q4": lambda: K.q_matmul(x, q4, "q4", 32, out=out),
             "fastlm-q8": lambda: K.q_matmul(x, q8, "q8", 32, out=out),
             "fastlm-fp32": lambda: K.matmul(x, pw, out=out),
             "torch-dynamic-int8": dynamic, "torch-fp32": lambda: F.linear(xt, wt)}
    run(benchmark, impl, calls)


# ---- attention ----
ATTN = {"decode S=2048": (9, 3, 1, 2048, 64), "prefill causal S=512": (9, 3, 512, 512, 64),
        "decode S=512": (9, 3, 1, 512, 64)}


@pytest.mark.parametrize("impl", ["fastlm", "torch"])
@pytest.mark.parametrize("case", list(ATTN))
def test_attention(benchmark, rng, impl, case):
    H, Hkv, T, S, D = ATTN[case]
    benchmark.group = f"attention {case} ({H}/{Hkv} heads, D={D})"
    q = rng.standard_normal((H, T, D), dtype=np.float32)
    k = rng.standard_normal((Hkv, S, D), dtype=np.float32)
    v = rng.standard_normal((Hkv, S, D), dtype=np.float32)
    causal = T > 1
    record(benchmark, impl)
    qt, kt, vt = map(torch.from_numpy, (q, k, v))
    out = np.empty((H, T, D), np.float32)
    calls = {"fastlm": lambda: K.attention(q, k, v, causal=causal, out=out),
             "torch": lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, enable_gqa=True)}
    run(benchmark, impl, calls)


# ---- norms and the small ops ----
@pytest.mark.parametrize("impl", ["fastlm", "torch"])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "silu_mul", "gelu_tanh", "add", "softmax", "rope"])
def test_small_ops(benchmark, rng, impl, op):
    shape = {"silu_mul": (512, 1536), "gelu_tanh": (512, 1536), "softmax": (9 * 64, 512),
             "rope": (512, 9, 64)}.get(op, (512, 576))
    benchmark.group = f"{op} {shape}"
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal(shape[-1], dtype=np.float32)
    moved = {"silu_mul": 3, "add": 3}.get(op, 2) * x.nbytes  # arrays read + written
    record(benchmark, impl, float(moved), "GB/s")
    out = np.empty(shape, np.float32)
    pos = np.arange(shape[0], dtype=np.int64)
    ours = {
        "layer_norm": lambda: K.layer_norm(x, w, w, out=out),
        "rms_norm": lambda: K.rms_norm(x, w, out=out),
        "silu_mul": lambda: K.silu_mul(x, y, out=out),
        "gelu_tanh": lambda: K.gelu_tanh(x, out=out),
        "add": lambda: K.add(x, y, out=out),
        "softmax": lambda: K.softmax(x, out=out),
        "rope": lambda: K.rope(x, pos, out=out),
    }
    xt, yt, wt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w)
    inv = 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64))
    f = torch.arange(shape[0]).float()[:, None] * inv[None]
    cos = torch.cat([f.cos(), f.cos()], -1)[:, None, :]
    sin = torch.cat([f.sin(), f.sin()], -1)[:, None, :]

    def rope():  # Hugging Face's apply_rotary_pos_emb on precomputed cos/sin
        rot = torch.cat([-xt[..., 32:], xt[..., :32]], -1)
        return xt * cos + rot * sin
    theirs = {
        "layer_norm": lambda: F.layer_norm(xt, (shape[-1],), wt, wt),
        "rms_norm": lambda: F.rms_norm(xt, (shape[-1],), wt, 1e-6),
        "silu_mul": lambda: F.silu(xt) * yt,
        "gelu_tanh": lambda: F.gelu(xt, approximate="tanh"),
        "add": lambda: xt + yt,
        "softmax": lambda: torch.softmax(xt, -1),
        "rope": rope,
    }
    run(benchmark, impl, {"fastlm": ours[op], "torch": theirs[op]})

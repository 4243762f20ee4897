"""Fused attention against torch's scaled_dot_product_attention (GQA expanded) and the reference."""
from __future__ import annotations

import fastlm
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from fastlm import kernels as K


def torch_attention(q, k, v, causal, scale=None, window=0, softcap=0.0):
    H, T, D = q.shape
    Hkv, S, _ = k.shape
    kt = torch.from_numpy(k).repeat_interleave(H // Hkv, dim=0)
    vt = torch.from_numpy(v).repeat_interleave(H // Hkv, dim=0)
    mask = None
    if causal:  # query t sits at position S - T + t: the mask is aligned bottom-right
        mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
        if window:  # and sees only the last `window` keys up to its own position
            mask &= ~torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T - window)
    if softcap:  # scores capped before the mask and the softmax (as transformers' eager Gemma 2 attention)
        qt = torch.from_numpy(q).double()
        s = qt @ kt.double().transpose(1, 2) * (scale if scale is not None else D ** -0.5)
        s = softcap * torch.tanh(s / softcap)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return (torch.softmax(s, -1) @ vt.double()).float().numpy()
    return F.scaled_dot_product_attention(torch.from_numpy(q), kt, vt, attn_mask=mask, scale=scale).numpy()


CASES = [  # H, Hkv, T, S, D
    (1, 1, 1, 1, 64), (1, 1, 1, 7, 8), (9, 3, 1, 2048, 64), (9, 3, 1, 65, 64), (4, 2, 3, 577, 64),
    (4, 4, 7, 7, 16), (6, 3, 63, 63, 64), (6, 3, 65, 65, 64), (2, 1, 65, 1537, 64), (9, 3, 130, 130, 64),
    (3, 1, 33, 100, 80), (4, 2, 9, 9, 7), (2, 2, 5, 12, 128), (8, 1, 2, 9, 65),
]


def qkv(rng, H, Hkv, T, S, D, q_scale=1.0):
    q = (rng.standard_normal((H, T, D), dtype=np.float32) * q_scale).astype(np.float32)
    return q, rng.standard_normal((Hkv, S, D), dtype=np.float32), rng.standard_normal((Hkv, S, D), dtype=np.float32)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("H,Hkv,T,S,D", CASES)
def test_attention(isa, rng, H, Hkv, T, S, D, causal):
    q, k, v = qkv(rng, H, Hkv, T, S, D)
    got = K.attention(q, k, v, causal=causal)
    assert got.shape == (H, T, D) and got.dtype == np.float32
    assert_close(got, torch_attention(q, k, v, causal), 1e-4, "attention vs torch SDPA")
    assert_close(got, K.ref.attention(q, k, v, causal=causal), 1e-4, "attention vs reference")


WINDOW_CASES = [  # H, Hkv, T, S, D, window: decode (split-KV) and prefill (blocked) rows, windows
    (1, 1, 1, 1, 64, 1), (4, 2, 1, 300, 64, 64), (9, 3, 1, 2048, 64, 100), (4, 2, 3, 577, 64, 5),
    (4, 2, 4, 200, 16, 1), (6, 3, 65, 65, 64, 16), (2, 1, 65, 1537, 64, 300), (9, 3, 130, 400, 64, 64),
    (3, 1, 33, 100, 80, 200), (4, 2, 9, 9, 7, 3), (2, 2, 40, 300, 128, 33),
]


@pytest.mark.parametrize("H,Hkv,T,S,D,window", WINDOW_CASES)
def test_sliding_window_attention(isa, rng, H, Hkv, T, S, D, window):
    q, k, v = qkv(rng, H, Hkv, T, S, D)
    got = K.attention(q, k, v, window=window)
    assert_close(got, torch_attention(q, k, v, True, window=window), 1e-4, f"window {window} vs torch SDPA")
    assert_close(got, K.ref.attention(q, k, v, window=window), 1e-4, f"window {window} vs reference")
    if window >= S:  # a window holding every key is no window
        np.testing.assert_array_equal(got, K.attention(q, k, v))


@pytest.mark.parametrize("H,Hkv,T,S,D,window", WINDOW_CASES[:6] + [(4, 2, 70, 70, 64, 0), (9, 3, 1, 300, 64, 0)])
def test_soft_capped_scores(isa, rng, H, Hkv, T, S, D, window):
    q, k, v = qkv(rng, H, Hkv, T, S, D, q_scale=2.0)
    got = K.attention(q, k, v, window=window, softcap=1.5)
    assert_close(got, torch_attention(q, k, v, True, window=window, softcap=1.5), 1e-4, "softcap vs torch")
    assert_close(got, K.ref.attention(q, k, v, window=window, softcap=1.5), 1e-4, "softcap vs reference")
    with pytest.raises(ValueError, match="softcap"):
        K.attention(q, k, v, softcap=-1.0)


def test_sliding_window_arguments():
    q = np.zeros((1, 2, 8), np.float32)
    with pytest.raises(ValueError, match="window must be >= 0"):
        K.attention(q, q, q, window=-1)
    with pytest.raises(ValueError, match="needs causal"):
        K.attention(q, q, q, causal=False, window=4)


def test_attention_scale_and_out(rng):
    q = rng.standard_normal((4, 5, 32), dtype=np.float32)
    k = rng.standard_normal((2, 9, 32), dtype=np.float32)
    v = rng.standard_normal((2, 9, 32), dtype=np.float32)
    out = np.empty((4, 5, 32), np.float32)
    K.attention(q, k, v, scale=0.3, out=out)
    assert_close(out, torch_attention(q, k, v, True, scale=0.3), 1e-4, "scale")


def test_attention_large_scores_stay_finite(rng):
    # scores of +-1e4: the online softmax must rescale, not overflow
    q = rng.standard_normal((2, 70, 64), dtype=np.float32) * 30
    k = rng.standard_normal((1, 70, 64), dtype=np.float32) * 30
    v = rng.standard_normal((1, 70, 64), dtype=np.float32)
    got = K.attention(q, k, v)
    assert np.isfinite(got).all()
    assert_close(got, torch_attention(q, k, v, True), 1e-4, "large scores")


def test_decode_equals_last_row_of_prefill(rng):
    q = rng.standard_normal((9, 40, 64), dtype=np.float32)
    k = rng.standard_normal((3, 40, 64), dtype=np.float32)
    v = rng.standard_normal((3, 40, 64), dtype=np.float32)
    full = K.attention(q, k, v)
    last = K.attention(np.ascontiguousarray(q[:, -1:]), k, v)
    assert_close(last, full[:, -1:], 1e-5, "decode vs prefill")


def test_attention_thread_counts_agree(rng):
    q = rng.standard_normal((9, 1, 64), dtype=np.float32)
    k = rng.standard_normal((3, 1000, 64), dtype=np.float32)
    v = rng.standard_normal((3, 1000, 64), dtype=np.float32)
    before = fastlm.get_num_threads()
    try:
        fastlm.set_num_threads(1)
        a = K.attention(q, k, v)
        fastlm.set_num_threads(5)
        b = K.attention(q, k, v)
    finally:
        fastlm.set_num_threads(before)
    assert_close(a, b, 1e-5, "threads")

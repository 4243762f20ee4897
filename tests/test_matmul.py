"""matmul against the scalar reference, torch's F.linear and NumPy, on odd shapes and every ISA."""
from __future__ import annotations

import fastlm
import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from fastlm import kernels as K
from hypothesis import given, settings
from hypothesis import strategies as st

SHAPES = [  # (M, K, N)
    (1, 1, 1), (1, 7, 3), (1, 577, 65), (1, 63, 1537), (2, 65, 7), (3, 7, 577),
    (4, 63, 65), (7, 577, 63), (63, 65, 1537), (65, 1537, 7), (577, 63, 65), (13, 4097, 33),
    (64, 576, 1536),
]


@pytest.mark.parametrize("M,K_,N", SHAPES)
def test_matmul_f32(isa, rng, M, K_, N):
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    want = F.linear(torch.from_numpy(x).double(), torch.from_numpy(w).double(), torch.from_numpy(b).double()).numpy()
    assert_close(K.matmul(x, w, b), want, 1e-5, "matmul vs float64")
    assert_close(K.matmul(x, w), x.astype(np.float64) @ w.T.astype(np.float64), 1e-5, "no bias")
    assert_close(K.matmul(x, w, b), F.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy(),
                 1e-4, "matmul vs torch fp32")
    assert_close(K.matmul(x, w, b), K.ref.matmul(x, w, b), 1e-5, "matmul vs reference")


@pytest.mark.parametrize("M,K_,N", SHAPES)
def test_matmul_bf16_weights(isa, rng, M, K_, N):
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32).astype(ml_dtypes.bfloat16)
    want = x.astype(np.float64) @ w.astype(np.float64).T  # bf16 values are exact in float64
    assert_close(K.matmul(x, w), want, 1e-5, "bf16 matmul")
    wt = torch.from_numpy(w.view(np.int16)).view(torch.bfloat16).float()
    assert_close(K.matmul(x, w), F.linear(torch.from_numpy(x), wt).numpy(), 1e-4, "bf16 vs torch")
    pw = K.pack(w)
    assert pw.dtype == "bfloat16" and pw.shape == (N, K_)
    np.testing.assert_array_equal(K.matmul(x, pw), K.matmul(x, pw))
    assert_close(K.matmul(x, pw), want, 1e-5, "packed bf16")


@pytest.mark.parametrize("M,K_,N", SHAPES)
def test_packed_weight_matches_unpacked(isa, rng, M, K_, N):
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    pw = K.pack(w)
    assert pw.isa == isa and pw.shape == (N, K_) and pw.nbytes >= w.nbytes
    assert_close(K.matmul(x, pw, b), K.ref.matmul(x, w, b), 1e-5, "packed")


def test_out_argument(rng):
    x = rng.standard_normal((5, 33), dtype=np.float32)
    w = rng.standard_normal((9, 33), dtype=np.float32)
    out = np.full((5, 9), np.nan, dtype=np.float32)
    y = K.matmul(x, w, out=out)
    assert y is out or np.shares_memory(y, out)
    assert_close(out, x.astype(np.float64) @ w.T, 1e-5, "out=")


def test_threads_do_not_change_matmul_results(rng):
    x = rng.standard_normal((70, 300), dtype=np.float32)
    w = rng.standard_normal((500, 300), dtype=np.float32)
    before = fastlm.get_num_threads()
    try:
        fastlm.set_num_threads(1)
        one = [K.matmul(x, w), K.matmul(x[:1].copy(), w)]
        fastlm.set_num_threads(4)
        four = [K.matmul(x, w), K.matmul(x[:1].copy(), w)]
    finally:
        fastlm.set_num_threads(before)
    for a, b in zip(one, four):
        np.testing.assert_array_equal(a, b)


def test_concurrent_callers_from_python_threads(rng):
    from concurrent.futures import ThreadPoolExecutor

    xs = [rng.standard_normal((17, 200), dtype=np.float32) for _ in range(8)]
    w = rng.standard_normal((300, 200), dtype=np.float32)
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda x: K.matmul(x, w), xs * 4))
    for x, y in zip(xs * 4, got):
        assert_close(y, x.astype(np.float64) @ w.T, 1e-5, "concurrent")


@settings(max_examples=40, deadline=None)
@given(M=st.integers(1, 40), K_=st.integers(1, 300), N=st.integers(1, 100), bf16=st.booleans())
def test_matmul_random_shapes(M, K_, N, bf16):
    rng = np.random.default_rng(M * 100003 + K_ * 101 + N)
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32)
    if bf16:
        w = w.astype(ml_dtypes.bfloat16)
    assert_close(K.matmul(x, w), K.ref.matmul(x, w), 1e-4, "random shape")  # the fp32 bar

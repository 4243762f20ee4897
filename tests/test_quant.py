"""int8: the quantizer bit-exact with its NumPy twin; the int8 GEMM against the reference and
against torch's dynamic int8 Linear on error statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close
from fastlm import kernels as K
from fastlm.quant import quantize_int8_reference


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (63, 577), (65, 1537), (7, 4097)], ids=str)
def test_quantize_bit_exact(isa, rng, shape):
    w = rng.standard_normal(shape, dtype=np.float32) * rng.uniform(0.01, 10, size=(shape[0], 1)).astype(np.float32)
    w[0, 0] = 0.5 * (w[0].max())  # ties land on .5 after scaling often enough: exercised below too
    q, s = K.quantize_int8(w)
    q_np, s_np = quantize_int8_reference(w)
    q_ref, s_ref = K.ref.quantize_int8(w)
    assert q.dtype == np.int8 and s.dtype == np.float32
    np.testing.assert_array_equal(q, q_np)
    np.testing.assert_array_equal(s, s_np)
    np.testing.assert_array_equal(q, q_ref)
    assert np.abs(q).max() <= 127
    assert_close(q * s[:, None], w, 1 / 127, "dequantized")


def test_quantize_ties_and_zero_rows(isa):
    w = np.array([[0.0, 0.0, 0.0], [127.0, 0.5, -1.5], [254.0, 1.0, -3.0]], np.float32)
    q, s = K.quantize_int8(w)
    np.testing.assert_array_equal(q, quantize_int8_reference(w)[0])
    assert s[0] == 0 and (q[0] == 0).all()
    assert q[1].tolist() == [127, 0, -2]  # round half to even, as nearbyint
    assert q[2].tolist() == [127, 0, -2]


@pytest.mark.parametrize("M,K_,N", [(1, 1, 1), (1, 577, 65), (2, 63, 7), (3, 65, 1537), (4, 7, 3),
                                    (7, 577, 63), (63, 65, 33), (65, 1537, 65), (130, 576, 1536)])
def test_int8_matmul_matches_reference(isa, rng, M, K_, N):
    x = rng.standard_normal((M, K_), dtype=np.float32)
    w = rng.standard_normal((N, K_), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    qw, s = K.quantize_int8(w)
    got = K.int8_matmul(x, qw, s, b)
    assert_close(got, K.ref.int8_matmul(x, qw, s, b), 1e-6, "int8 vs reference")
    # and it approximates the float product
    assert_close(got, x.astype(np.float64) @ w.T.astype(np.float64) + b, 0.03, "int8 vs float")


def test_int8_error_no_worse_than_torch_dynamic_quant(rng):
    M, K_, N = 64, 576, 1536
    x = rng.standard_normal((M, K_), dtype=np.float32)
    x[:, :4] *= 20  # a few outlier channels, as in real activations
    w = rng.standard_normal((N, K_), dtype=np.float32) * 0.05
    b = rng.standard_normal(N, dtype=np.float32)
    exact = x.astype(np.float64) @ w.T.astype(np.float64) + b

    lin = torch.nn.Linear(K_, N)
    lin.weight.data = torch.from_numpy(w)
    lin.bias.data = torch.from_numpy(b)
    qlin = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        y_torch = qlin(torch.from_numpy(x)).numpy()
    qw, s = K.quantize_int8(w)
    y_ours = K.int8_matmul(x, qw, s, b)

    def rel(y):
        return float(np.abs(y - exact).mean() / np.abs(exact).mean())

    print(f"mean relative error: fastlm {rel(y_ours):.4g}, torch dynamic int8 {rel(y_torch):.4g}")
    assert rel(y_ours) < 0.05  # per-row activation scales: outlier channels cost precision
    assert rel(y_ours) <= rel(y_torch) * 1.05

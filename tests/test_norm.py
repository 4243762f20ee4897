"""layer_norm and rms_norm against torch and the reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from fastlm import kernels as K

SHAPES = [(1,), (7,), (1, 1), (3, 7), (63, 577), (65, 1537), (2, 3, 65), (512, 576), (5, 4097)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_layer_norm(isa, rng, shape):
    x = (rng.standard_normal(shape, dtype=np.float32) * 3 + 5).astype(np.float32)  # off-centre rows
    n = shape[-1]
    w = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    want = F.layer_norm(torch.from_numpy(x).double(), (n,), torch.from_numpy(w).double(),
                        torch.from_numpy(b).double(), 1e-5).numpy()
    assert_close(K.layer_norm(x, w, b, 1e-5), want, 1e-5, "layer_norm")
    assert_close(K.layer_norm(x, w, b), K.ref.layer_norm(x, w, b), 1e-5, "vs reference")
    plain = F.layer_norm(torch.from_numpy(x).double(), (n,), eps=1e-5).numpy()
    assert_close(K.layer_norm(x, None, None), plain, 1e-5, "no affine")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rms_norm(isa, rng, shape):
    x = rng.standard_normal(shape, dtype=np.float32)
    n = shape[-1]
    w = rng.standard_normal(n, dtype=np.float32)
    want = F.rms_norm(torch.from_numpy(x).double(), (n,), torch.from_numpy(w).double(), 1e-6).numpy()
    assert_close(K.rms_norm(x, w, 1e-6), want, 1e-5, "rms_norm")
    assert_close(K.rms_norm(x, w, 1e-5), K.ref.rms_norm(x, w, 1e-5), 1e-5, "vs reference")
    assert_close(K.rms_norm(x, None), F.rms_norm(torch.from_numpy(x).double(), (n,), eps=1e-6).numpy(),
                 1e-5, "no weight")


def test_norm_in_place(rng):
    x = rng.standard_normal((4, 100), dtype=np.float32)
    w = rng.standard_normal(100, dtype=np.float32)
    want = K.rms_norm(x, w)
    K.rms_norm(x, w, out=x)
    np.testing.assert_array_equal(x, want)


def test_layer_norm_outliers_and_constant_rows(isa, rng):
    x = rng.standard_normal((6, 768), dtype=np.float32)
    x[0, 0] = 1e4       # an outlier where the kernel takes its shift
    x[1, 5] = -3e3      # one elsewhere
    x[2] += 1e3         # a row far from zero
    x[3] = 7.0          # a constant row: zero spread
    x[4, :] = np.linspace(-1, 1, 768)
    w = rng.standard_normal(768, dtype=np.float32)
    b = rng.standard_normal(768, dtype=np.float32)
    want = F.layer_norm(torch.from_numpy(x).double(), (768,), torch.from_numpy(w).double(),
                        torch.from_numpy(b).double(), 1e-5).numpy()
    got = K.layer_norm(x, w, b, 1e-5)
    torch32 = F.layer_norm(torch.from_numpy(x), (768,), torch.from_numpy(w), torch.from_numpy(b), 1e-5).numpy()
    for r in range(6):
        # float32 itself limits row 2 (values ~1000 carry ulp 6e-5): hold us to torch's fp32 error
        torch_err = float(np.abs(torch32[r] - want[r]).max() / np.abs(want[r]).max())
        assert_close(got[r], want[r], max(1e-5, 2 * torch_err), f"row {r}")

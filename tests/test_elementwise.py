"""rope, gelu_tanh, silu_mul, softmax and add against torch and the reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from fastlm import kernels as K


def hf_rope(x, pos, theta, rot=None, interleaved=False):
    """Hugging Face's rotate-half (Llama) or GPT-J's interleaved rotation, in torch float64."""
    T, H, D = x.shape
    rot = rot or D
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot))
    freqs = torch.from_numpy(pos).float()[:, None] * inv_freq[None, :]  # float32 angles, as HF
    cos, sin = freqs.double().cos()[:, None, :], freqs.double().sin()[:, None, :]
    xt = torch.from_numpy(x).double()
    xr, rest = xt[..., :rot], xt[..., rot:]
    if interleaved:
        a, b = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    else:
        cos2, sin2 = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
        half = rot // 2
        rotated = torch.cat([-xr[..., half:], xr[..., :half]], -1)
        out = xr * cos2 + rotated * sin2
    return torch.cat([out, rest], -1).numpy()


@pytest.mark.parametrize("T,H,D,rot", [(1, 1, 2, None), (7, 3, 64, None), (63, 9, 64, None), (5, 2, 80, 32),
                                       (65, 4, 128, None), (3, 1, 14, None)])
@pytest.mark.parametrize("interleaved", [False, True], ids=["rotate_half", "interleaved"])
def test_rope(isa, rng, T, H, D, rot, interleaved):
    x = rng.standard_normal((T, H, D), dtype=np.float32)
    pos = rng.integers(0, 4096, size=T).astype(np.int64)
    got = K.rope(x, pos, theta=10000.0, rotary_dim=rot, interleaved=interleaved)
    assert_close(got, hf_rope(x, pos, 10000.0, rot, interleaved), 2e-6, "rope")
    assert_close(got, K.ref.rope(x, pos, theta=10000.0, rotary_dim=rot, interleaved=interleaved), 2e-6, "vs ref")


def test_rope_defaults_in_place_2d_and_inv_freq(rng):
    x = rng.standard_normal((6, 32), dtype=np.float32)
    want = hf_rope(x[:, None, :], np.arange(6), 500000.0)[:, 0, :]
    assert_close(K.rope(x, theta=500000.0), want, 2e-6, "2-D, default positions")
    inv = (1.0 / (500000.0 ** (np.arange(0, 32, 2) / 32))).astype(np.float32)
    assert_close(K.rope(x, np.arange(6, dtype=np.int32), inv_freq=inv), want, 2e-6, "inv_freq")
    y = x.copy()
    K.rope(y, out=y, theta=500000.0)
    assert_close(y, want, 2e-6, "in place")


@pytest.mark.parametrize("shape", [(1,), (7,), (63, 65), (3, 577), (1537,), (4, 4097)], ids=str)
def test_pointwise(isa, rng, shape):
    x = (rng.standard_normal(shape, dtype=np.float32) * 4).astype(np.float32)
    u = rng.standard_normal(shape, dtype=np.float32)
    xt, ut = torch.from_numpy(x).double(), torch.from_numpy(u).double()
    # torch's 0.5 x (1 + tanh u) cancels to 0 for x << 0; the same function without cancellation:
    xd = x.astype(np.float64)
    gelu = xd / (1 + np.exp(-2 * 0.7978845608028654 * (xd + 0.044715 * xd**3)))
    assert_close(K.gelu_tanh(x), gelu, 2e-6, "gelu_tanh")
    np.testing.assert_allclose(K.gelu_tanh(x), F.gelu(xt, approximate="tanh").numpy(), rtol=2e-6, atol=1e-6)
    assert_close(K.silu_mul(x, u), (F.silu(xt) * ut).numpy(), 2e-6, "silu_mul")
    assert_close(K.add(x, u), (xt + ut).numpy(), 1e-7, "add")
    assert_close(K.softmax(x), torch.softmax(xt, -1).numpy(), 2e-6, "softmax")
    for name in ("gelu_tanh", "softmax"):
        assert_close(getattr(K, name)(x), getattr(K.ref, name)(x), 2e-6, name)
    assert_close(K.silu_mul(x, u), K.ref.silu_mul(x, u), 2e-6, "silu_mul vs ref")
    assert_close(K.gelu_mul(x, u), gelu * u, 2e-6, "gelu_mul")
    assert_close(K.gelu_mul(x, u), K.ref.gelu_mul(x, u), 2e-6, "gelu_mul vs ref")


def test_extreme_values(isa):
    x = np.array([-1000.0, -90.0, -20.0, 0.0, 20.0, 90.0, 1000.0, -5.0, 3.0], np.float32)
    xt = torch.from_numpy(x).double()
    assert_close(K.gelu_tanh(x), F.gelu(xt, approximate="tanh").numpy(), 2e-6, "gelu extremes")
    assert_close(K.silu_mul(x, np.ones_like(x)), F.silu(xt).numpy(), 2e-6, "silu extremes")
    s = K.softmax(np.array([[1e4, 0.0, -1e4, -np.inf]], np.float32))
    np.testing.assert_allclose(s, [[1.0, 0.0, 0.0, 0.0]])

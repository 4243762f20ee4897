"""Bad arguments raise TypeError/ValueError naming the argument; never a crash."""
from __future__ import annotations

import numpy as np
import pytest
from fastlm import kernels as K

f32 = np.float32


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype=dtype)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: K.matmul(z(2, 3).astype(np.float64), z(4, 3)), TypeError, ["x", "float32", "float64"]),
    (lambda: K.matmul(z(2, 3), z(4, 3, dtype=np.float16)), TypeError, ["w", "float16"]),
    (lambda: K.matmul([[1.0]], z(1, 1)), TypeError, ["x", "numpy.ndarray", "list"]),
    (lambda: K.matmul(z(3), z(4, 3)), ValueError, ["x", "2 dimensions", "(3,)"]),
    (lambda: K.matmul(z(2, 3), z(4, 5)), ValueError, ["K", "(2, 3)", "5"]),
    (lambda: K.matmul(z(2, 3), z(4, 3), z(5)), ValueError, ["bias", "(4,)"]),
    (lambda: K.matmul(z(3, 2).T, z(4, 3)), ValueError, ["x", "C-contiguous"]),
    (lambda: K.matmul(z(0, 3), z(4, 3)), ValueError, ["x", "empty"]),
    (lambda: K.matmul(z(2, 3), z(4, 3), out=z(4, 2)), ValueError, ["out", "(2, 4)"]),
    (lambda: K.pack(z(4)), ValueError, ["w", "2 dimensions"]),
    (lambda: K.attention(z(9, 1, 64), z(4, 8, 64), z(4, 8, 64)), ValueError, ["multiple", "9", "4"]),
    (lambda: K.attention(z(2, 9, 64), z(1, 8, 64), z(1, 8, 64)), ValueError, ["T = 9", "S = 8"]),
    (lambda: K.attention(z(2, 1, 64), z(1, 8, 32), z(1, 8, 32)), ValueError, ["head dim"]),
    (lambda: K.attention(z(2, 1, 64), z(1, 8, 64), z(1, 7, 64)), ValueError, ["k and v", "same shape"]),
    (lambda: K.attention(z(2, 64), z(1, 8, 64), z(1, 8, 64)), ValueError, ["q", "3 dimensions"]),
    (lambda: K.attention(z(2, 1, 64), z(1, 0, 64), z(1, 0, 64)), ValueError, ["k", "empty"]),
    (lambda: K.attention(z(2, 1, 64), z(1, 8, 64), z(1, 8, 64), scale=float("nan")), ValueError, ["scale"]),
    (lambda: K.layer_norm(z(4, 8), z(7), z(8)), ValueError, ["weight", "(8,)"]),
    (lambda: K.rms_norm(z(4, 8), z(8), -1.0), ValueError, ["eps"]),
    (lambda: K.rms_norm(z(4, 8, dtype=np.int32), z(8)), TypeError, ["x", "int32"]),
    (lambda: K.rope(z(4, 2, 7)), ValueError, ["even"]),
    (lambda: K.rope(z(4, 2, 8), np.arange(3)), ValueError, ["positions", "(4,)"]),
    (lambda: K.rope(z(4, 2, 8), np.arange(4.0)), TypeError, ["positions", "int"]),
    (lambda: K.rope(z(4, 2, 8), rotary_dim=10), ValueError, ["rotary_dim"]),
    (lambda: K.rope(z(4, 2, 8), theta=0.0), ValueError, ["theta"]),
    (lambda: K.silu_mul(z(4), z(5)), ValueError, ["gate", "up", "same shape"]),
    (lambda: K.add(z(4), z(4, 1)), ValueError, ["same shape"]),
    (lambda: K.softmax(z(0)), ValueError, ["empty"]),
])
def test_bad_arguments_raise(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_out_must_not_alias_inputs():
    x = np.ones((4, 4), f32)
    with pytest.raises(ValueError, match="overlap"):
        K.matmul(x, np.ones((4, 4), f32), out=x)
    q = np.ones((1, 2, 8), f32)
    with pytest.raises(ValueError, match="overlap"):
        K.attention(q, np.ones((1, 2, 8), f32), np.ones((1, 2, 8), f32), out=q)


def test_read_only_out_rejected():
    out = np.zeros((2, 4), f32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        K.matmul(np.ones((2, 3), f32), np.ones((4, 3), f32), out=out)

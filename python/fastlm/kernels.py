"""CPU kernels on NumPy arrays, dispatched to the ISA chosen at import (see ``fastlm.info``).

Every function takes C-contiguous float32 arrays (matmul weights may be ``ml_dtypes.bfloat16``),
checks them, raises TypeError/ValueError naming a bad argument, and runs with the GIL released
on all the threads of fastlm's pool. ``out=`` writes into an existing array.

>>> import numpy as np
>>> from fastlm import kernels
>>> x = np.random.rand(4, 64).astype(np.float32)
>>> w = np.random.rand(32, 64).astype(np.float32)
>>> kernels.matmul(x, w).shape
(4, 32)

``fastlm.kernels.ref`` holds the scalar reference of each kernel (the test oracles), and
``fastlm.kernels.cuda`` the CUDA variants built so far (matmul, rms_norm, layer_norm, softmax, add,
silu_mul, gelu_tanh) on CUDA arrays, when the build found a CUDA toolkit.
"""
from __future__ import annotations

from fastlm import _runtime  # noqa: F401  (applies FASTLM_ISA / FASTLM_NUM_THREADS)
from fastlm._C import kernels as _k
from fastlm._C.kernels import (
    PackedWeight,
    add,
    attention,
    gelu_tanh,
    int8_matmul,
    layer_norm,
    matmul,
    pack,
    q_dequantize,
    q_matmul,
    q_quantize,
    quantize_int8,
    rms_norm,
    rope,
    silu_mul,
    softmax,
)

ref = _k.ref
# CUDA variants on device arrays (__cuda_array_interface__): cuda.built says whether this build has
# them, cuda.available() whether a device is visible; without one every kernel raises RuntimeError
from fastlm._C import cuda  # noqa: E402

__all__ = [
    "PackedWeight", "add", "attention", "gelu_tanh", "int8_matmul", "layer_norm", "matmul", "pack",
    "q_dequantize", "q_matmul", "q_quantize", "quantize_int8", "cuda", "ref", "rms_norm", "rope", "silu_mul", "softmax",
]

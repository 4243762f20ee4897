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
``fastlm.kernels.cuda`` the CUDA kernels (SGEMM, tensor-core bf16 / f16 / int8 GEMM, GEMV,
FlashAttention-2, split-KV attention, norms, rope, embedding, element-wise ops) on device arrays
(DeviceArray, torch / CuPy through DLPack or ``__cuda_array_interface__``) when the build found a
CUDA toolkit; ``fastlm.kernels.cuda_emulated`` the same sources run on the host under a SIMT
emulation, for checking them without a GPU (see cuda/README.md).
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
# CUDA variants on device arrays: cuda.built says whether this build has them, cuda.available()
# whether a device is visible; without one every kernel raises RuntimeError
from fastlm._C import cuda  # noqa: E402
from fastlm._C import cuda_emulated  # noqa: E402

__all__ = [
    "PackedWeight", "add", "attention", "gelu_tanh", "int8_matmul", "layer_norm", "matmul", "pack",
    "q_dequantize", "q_matmul", "q_quantize", "quantize_int8", "cuda", "cuda_emulated", "ref", "rms_norm", "rope", "silu_mul", "softmax",
]

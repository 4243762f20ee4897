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
from fastlm._C import cuda, cuda_emulated
from fastlm._C import kernels as _k

# every kernel the native module binds, re-exported as it is: adding a kernel touches no list here
__all__ = sorted(n for n in dir(_k) if not n.startswith("_") and n != "ref") + ["cuda", "cuda_emulated", "ref"]
globals().update({n: getattr(_k, n) for n in __all__ if hasattr(_k, n)})
ref = _k.ref  # the scalar references (the test oracles)

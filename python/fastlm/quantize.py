"""NumPy reference quantizers, bit-exact twins of the C++ ones (tests hold them to that)."""
from __future__ import annotations

import numpy as np


def quantize_int8_reference(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8, the same float32 arithmetic as ``fastlm.kernels.quantize_int8``.

    scale = max|w_row| / 127; q = clip(rint(w * (1 / scale)), -127, 127); a zero row gets scale 0.

    >>> q, s = quantize_int8_reference(np.array([[1.0, -0.5]], np.float32))
    >>> q.tolist(), s.tolist()
    ([[127, -64]], [0.007874015718698502])
    """
    w = np.asarray(w)
    if w.dtype != np.float32 or w.ndim != 2:
        raise ValueError(f"w must be a 2-D float32 array, got {w.dtype} of shape {w.shape}")
    amax = np.abs(w).max(axis=1)
    scale = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(w * inv[:, None]), -127, 127).astype(np.int8)
    return q, scale

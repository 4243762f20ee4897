"""Round to nearest: the NumPy twin of the C++ quantizer (``fastlm.kernels.q_quantize``), held
bit-exact to it by the tests, and the per-row int8 reference of ``fastlm.kernels.quantize_int8``.

>>> import numpy as np
>>> from fastlm.formats.qrecords import dequantize
>>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
>>> rec = quantize_rtn(w, "q8", 32)
>>> rec.shape, float(np.abs(dequantize(rec, "q8", 64, 32) - w).max()) < 0.02
((4, 68), True)
"""
from __future__ import annotations

import numpy as np

from fastlm.formats.qrecords import check_format, groups, records_q4, records_q8


def quantize_rtn(w: np.ndarray, qtype: str, G: int = 32) -> np.ndarray:
    """Round to nearest over each group's range; bit-exact with fastlm.kernels.q_quantize."""
    check_format(qtype, G)
    g = groups(w, qtype, G)
    N = g.shape[0]
    with np.errstate(divide="ignore"):
        if qtype == "q8":
            d = (np.abs(g).max(axis=2) / np.float32(127)).astype(np.float16)
            df = d.astype(np.float32)[..., None]
            inv = np.where(df > 0, np.float32(1) / df, np.float32(0)).astype(np.float32)
            q = np.clip(np.rint(g * inv), -127, 127)
            return records_q8(q.reshape(N, -1), d)
        lo, hi = g.min(axis=2), g.max(axis=2)
        m = lo.astype(np.float16)
        mf = m.astype(np.float32)
        d = ((hi - mf) / np.float32(15)).astype(np.float16)
        df = d.astype(np.float32)[..., None]
        inv = np.where(df > 0, np.float32(1) / df, np.float32(0)).astype(np.float32)
        q = np.clip(np.rint((g - mf[..., None]) * inv), 0, 15)
        return records_q4(q.reshape(N, -1), d, m)


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

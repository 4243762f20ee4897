"""Round to nearest: the NumPy twin of the C++ quantizer (``fastlm.kernels.q_quantize``), held
bit-exact to it by the tests.

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

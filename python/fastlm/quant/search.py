"""A 4-bit quantizer that searches each group's scale and minimum for the least weighted squared
error, instead of spanning the group's range (the idea of llama.cpp's make_qkx2_quants)."""
from __future__ import annotations

import numpy as np

from fastlm.formats.qrecords import check_format, groups, records_q4


def fit_dm(g: np.ndarray, wt: np.ndarray, steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Per group (last axis) the fp16 scale d and minimum m minimizing sum wt (d q + m - g)^2 with
    q = round((g - m) / d) in 0..15: candidate ranges shrunk from either end, each refit by weighted
    least squares given its quants (the idea of llama.cpp's make_qkx2_quants), best kept. float64."""
    lo, hi = g.min(axis=-1), g.max(axis=-1)
    f = 1.0 - 0.3 * np.arange(steps + 1) / steps
    cand_lo = np.concatenate([np.broadcast_to(lo, (steps + 1,) + lo.shape), lo[None] * f[1:, None, None]])
    cand_hi = np.concatenate([hi[None] * f[:, None, None], np.broadcast_to(hi, (steps,) + hi.shape)])
    a, b = cand_lo[..., None], cand_hi[..., None]  # (S, N, ng, 1)
    span = np.maximum(b - a, 1e-30)
    q = np.clip(np.rint((g - a) / span * 15), 0, 15)
    sw = wt.sum(axis=-1)
    sq, sqq = (wt * q).sum(axis=-1), (wt * q * q).sum(axis=-1)
    sx, sqx = (wt * g).sum(axis=-1), (wt * q * g).sum(axis=-1)
    det = sw * sqq - sq * sq
    ok = det > 1e-30 * np.maximum(sw * sqq, 1e-300)
    safe = np.where(ok, det, 1.0)
    d = np.maximum(np.where(ok, (sw * sqx - sq * sx) / safe, span[..., 0] / 15), 0)
    m = np.where(ok, (sqq * sx - sq * sqx) / safe, a[..., 0])
    dh = d.astype(np.float16).astype(np.float64)
    mh = m.astype(np.float16).astype(np.float64)
    q2 = np.where(dh[..., None] > 0, np.clip(np.rint((g - mh[..., None]) / np.where(dh > 0, dh, 1)[..., None]), 0, 15), 0)
    err = (wt * (dh[..., None] * q2 + mh[..., None] - g) ** 2).sum(axis=-1)
    best = err.argmin(axis=0)
    take = np.take_along_axis
    return take(dh, best[None], 0)[0], take(mh, best[None], 0)[0]


def q4_from_dm(g: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Quants of g (N, ng, G) for fp16-valued d, m (N, ng), as the kernels dequantize them."""
    df, mf = d.astype(np.float32), m.astype(np.float32)
    inv = np.where(df > 0, np.float32(1) / np.where(df > 0, df, 1), np.float32(0)).astype(np.float32)
    return np.clip(np.rint((g.astype(np.float32) - mf[..., None]) * inv[..., None]), 0, 15)


def quantize_q4_search(w: np.ndarray, G: int = 32, steps: int = 12) -> np.ndarray:
    """4-bit groups whose scale and minimum minimize the squared error, weighted by w^2 + the
    group's mean w^2 (llama.cpp's default without an importance matrix), rather than span the
    range (see fit_dm)."""
    check_format("q4", G)
    g = groups(w, "q4", G).astype(np.float64)
    N = g.shape[0]
    d, m = fit_dm(g, g ** 2 + (g ** 2).mean(axis=2, keepdims=True), steps)
    q = q4_from_dm(g, d, m)
    return records_q4(q.reshape(N, -1), d.astype(np.float16), m.astype(np.float16))

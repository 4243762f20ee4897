"""Quantized weights: the q8 / q4 row records the kernels read (see QWeight in
csrc/kernels/kernels.h), a NumPy reference quantizer held bit-exact to the C++ one, GGUF blocks
converted without a float round trip, a 4-bit quantizer that searches each group's scale and
minimum, and the writer of a quantized checkpoint (``fastlm quantize``).

A record holds one weight row: q8 = Kp int8 quants + Kp/G fp16 scales (w = d * q); q4 = Kp/2 bytes
of nibbles + Kp/G fp16 scales + Kp/G fp16 minimums (w = d * q + m, q in 0..15; in each 64 elements
byte j holds element j in its low nibble and 32 + j in its high one). Kp is K rounded up to a
multiple of the group size G (for q4 of 64 too).

>>> import numpy as np
>>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
>>> rec = quantize_rtn(w, "q8", 32)
>>> rec.shape, float(np.abs(dequantize(rec, "q8", 64, 32) - w).max()) < 0.02
((4, 68), True)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

FORMAT = "fastlm-quantized"
FORMAT_VERSION = 1
QTYPES = {"int8": "q8", "int4": "q4"}
GROUP_SIZES = (32, 64, 128)


def padded_k(qtype: str, K: int, G: int) -> int:
    unit = 64 if qtype == "q4" and G < 64 else G
    return (K + unit - 1) // unit * unit


def row_bytes(qtype: str, K: int, G: int) -> int:
    kp = padded_k(qtype, K, G)
    return kp + 2 * (kp // G) if qtype == "q8" else kp // 2 + 4 * (kp // G)


def _check(qtype: str, G: int) -> None:
    if qtype not in ("q8", "q4"):
        raise ValueError(f"qtype must be 'q8' or 'q4', got {qtype!r}")
    if G not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {G!r}")


def _groups(w: np.ndarray, qtype: str, G: int) -> np.ndarray:
    """(N, K) -> (N, Kp / G, G) float32, zero-padded."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    N, K = w.shape
    kp = padded_k(qtype, K, G)
    if kp != K:
        w = np.concatenate([w, np.zeros((N, kp - K), np.float32)], axis=1)
    return w.reshape(N, kp // G, G)


def _half_bytes(a: np.ndarray) -> np.ndarray:
    """(N, g) float16 -> (N, 2g) uint8, little-endian."""
    return np.ascontiguousarray(a.astype("<f2")).view(np.uint8)


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(N, Kp) ints in 0..15 -> (N, Kp / 2) bytes: per 64, byte j = q[j] | q[32 + j] << 4."""
    N, kp = q.shape
    b = q.astype(np.uint8).reshape(N, kp // 64, 2, 32)
    return (b[:, :, 0] | (b[:, :, 1] << 4)).reshape(N, kp // 2)


def unpack_nibbles(p: np.ndarray) -> np.ndarray:
    N, half = p.shape
    b = p.reshape(N, half // 32, 1, 32)
    return np.concatenate([b & 15, b >> 4], axis=2).reshape(N, half * 2)


def records_q8(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """int8 quants (N, Kp) and fp16 scales (N, Kp / G) -> records."""
    return np.concatenate([q.astype(np.int8).view(np.uint8), _half_bytes(d)], axis=1)


def records_q4(q: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """4-bit quants (N, Kp), fp16 scales and minimums (N, Kp / G) -> records."""
    return np.concatenate([pack_nibbles(q), _half_bytes(d), _half_bytes(m)], axis=1)


def quantize_rtn(w: np.ndarray, qtype: str, G: int = 32) -> np.ndarray:
    """Round to nearest over each group's range; bit-exact with fastlm.kernels.q_quantize."""
    _check(qtype, G)
    g = _groups(w, qtype, G)
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


def split(rec: np.ndarray, qtype: str, K: int, G: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """records -> (quants (N, Kp) int, scales (N, Kp / G) float32, minimums or None)."""
    kp = padded_k(qtype, K, G)
    ng = kp // G
    if rec.shape[1] != row_bytes(qtype, K, G):
        raise ValueError(f"{qtype} records of K={K}, group {G} have {row_bytes(qtype, K, G)} bytes, got {rec.shape[1]}")
    if qtype == "q8":
        q = rec[:, :kp].view(np.int8).astype(np.int32)
        d = np.ascontiguousarray(rec[:, kp:kp + 2 * ng]).view("<f2").astype(np.float32)
        return q, d, None
    q = unpack_nibbles(rec[:, :kp // 2]).astype(np.int32)
    d = np.ascontiguousarray(rec[:, kp // 2:kp // 2 + 2 * ng]).view("<f2").astype(np.float32)
    m = np.ascontiguousarray(rec[:, kp // 2 + 2 * ng:]).view("<f2").astype(np.float32)
    return q, d, m


def dequantize(rec: np.ndarray, qtype: str, K: int, G: int = 32) -> np.ndarray:
    """records -> (N, K) float32 (what the kernels compute with)."""
    q, d, m = split(rec, qtype, K, G)
    N = q.shape[0]
    w = q.reshape(N, -1, G).astype(np.float32) * d[..., None]
    if m is not None:
        w += m[..., None]
    return w.reshape(N, -1)[:, :K]


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


# ---- GGUF blocks -> records (no float round trip) ----

def from_ggml(raw: np.ndarray, type_name: str, shape: tuple[int, int]) -> tuple[np.ndarray, str] | None:
    """Q8_0 -> q8 / Q4_0, Q4_1 -> q4 records in groups of 32 (integer rearrangement only), or None
    for other types or widths."""
    N, K = shape
    if K % 32 or (type_name != "Q8_0" and K % 64):
        return None
    nb = K // 32
    if type_name == "Q8_0":
        b = np.asarray(raw).reshape(N, nb, 34)
        return np.concatenate([b[:, :, 2:].reshape(N, K), b[:, :, :2].reshape(N, 2 * nb)], axis=1), "q8"
    if type_name not in ("Q4_0", "Q4_1"):
        return None
    off = 4 if type_name == "Q4_1" else 2
    b = np.asarray(raw).reshape(N, nb, off + 16)
    qs = b[:, :, off:]  # ggml: per 32, byte j = q[j] | q[16 + j] << 4
    q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(N, K)
    d = np.ascontiguousarray(b[:, :, :2]).view("<f2").reshape(N, nb)
    if type_name == "Q4_1":
        m = np.ascontiguousarray(b[:, :, 2:4]).view("<f2").reshape(N, nb)
    else:  # w = d (q - 8) = d q + m with m = -8 d, exact in fp16
        m = (d.astype(np.float32) * -8).astype(np.float16)
    return records_q4(q, d, m), "q4"


# ---- a better 4-bit quantizer ----

def quantize_q4_search(w: np.ndarray, G: int = 32, importance: np.ndarray | None = None,
                       steps: int = 20) -> np.ndarray:
    """4-bit groups with scale and minimum chosen per group to minimize the (importance-weighted)
    squared error, not just to span the range: for candidate ranges shrunk from the extremes, the
    quants are rounded, then (d, m) refit by weighted least squares; the best per group is kept
    (the idea of llama.cpp's make_qkx2_quants, vectorized over all groups).

    importance: (K,) per-input-channel weights (e.g. the mean squared activation of that channel
    over calibration text: errors on channels that carry large activations cost more); None: w².
    """
    _check("q4", G)
    g = _groups(w, "q4", G).astype(np.float64)
    N, ng, _ = g.shape
    if importance is not None:
        imp = np.asarray(importance, dtype=np.float64)
        kp = ng * G
        imp = np.concatenate([imp, np.zeros(kp - imp.size)]) if imp.size < kp else imp
        wt = np.broadcast_to(imp.reshape(1, ng, G), g.shape) + 1e-12
    else:
        sigma2 = (g ** 2).mean(axis=2, keepdims=True)
        wt = g ** 2 + sigma2  # llama.cpp's default weighting without an importance matrix
    lo, hi = g.min(axis=2), g.max(axis=2)
    best_err = np.full((N, ng), np.inf)
    best_d = np.zeros((N, ng))
    best_m = np.zeros((N, ng))
    sw = wt.sum(axis=2)
    for i in range(steps + 1):
        # shrink the range from the top and the bottom alternately
        f = 1.0 - 0.3 * i / steps
        for shrink_lo in ((False, True) if i else (False,)):
            a = lo * f if shrink_lo else lo
            b = hi if shrink_lo else hi * f
            span = np.maximum(b - a, 1e-30)
            q = np.clip(np.rint((g - a[..., None]) / span[..., None] * 15), 0, 15)
            # weighted least squares for w ~ d q + m
            sq = (wt * q).sum(axis=2)
            sqq = (wt * q * q).sum(axis=2)
            sx = (wt * g).sum(axis=2)
            sqx = (wt * q * g).sum(axis=2)
            det = sw * sqq - sq * sq
            ok = det > 1e-30
            d = np.where(ok, (sw * sqx - sq * sx) / np.where(ok, det, 1), span / 15)
            m = np.where(ok, (sqq * sx - sq * sqx) / np.where(ok, det, 1), a)
            d = np.maximum(d, 0)
            dh, mh = d.astype(np.float16).astype(np.float64), m.astype(np.float16).astype(np.float64)
            # requantize with the rounded parameters, then score
            q2 = np.clip(np.rint((g - mh[..., None]) / np.where(dh > 0, dh, 1)[..., None]), 0, 15)
            q2 = np.where(dh[..., None] > 0, q2, 0)
            err = (wt * (dh[..., None] * q2 + mh[..., None] - g) ** 2).sum(axis=2)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_d = np.where(better, dh, best_d)
            best_m = np.where(better, mh, best_m)
    d16, m16 = best_d.astype(np.float16), best_m.astype(np.float16)
    df, mf = d16.astype(np.float32), m16.astype(np.float32)
    gf = g.astype(np.float32)
    inv = np.where(df > 0, np.float32(1) / np.where(df > 0, df, 1), np.float32(0)).astype(np.float32)
    q = np.clip(np.rint((gf - mf[..., None]) * inv[..., None]), 0, 15)
    return records_q4(q.reshape(N, -1), d16, m16)


# ---- schemes ----

@dataclass
class QuantScheme:
    """What each tensor becomes. Linear layers: dtype's format in groups of group_size;
    embeddings and the head: q8 in groups of 32 (a 4-bit tied embedding/head costs a small model
    much of its quality); `overrides` maps tensor names to "q8", "q4" or "float"."""

    dtype: str
    group_size: int = 32
    method: str = "rtn"            # "rtn", or "search" (4-bit scale/minimum search)
    overrides: dict = field(default_factory=dict)
    importance: dict = field(default_factory=dict)  # tensor name -> (K,) channel importance

    def __post_init__(self) -> None:
        if self.dtype not in QTYPES:
            raise ValueError(f"dtype must be 'int8' or 'int4' to quantize, got {self.dtype!r}")
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {self.group_size!r}")
        if self.method not in ("rtn", "search"):
            raise ValueError(f"method must be 'rtn' or 'search', got {self.method!r}")

    def format_for(self, name: str, embedding: bool = False) -> tuple[str, int] | None:
        """(qtype, group size), or None to keep the tensor in float."""
        kind = self.overrides.get(name)
        if kind == "float":
            return None
        if kind in ("q8", "q4"):
            return kind, (32 if kind == "q8" and embedding else self.group_size)
        if embedding:
            return "q8", 32
        return QTYPES[self.dtype], self.group_size

    def quantize(self, name: str, w: np.ndarray, qtype: str, G: int) -> np.ndarray:
        from fastlm import kernels

        if qtype == "q4" and self.method == "search":
            return quantize_q4_search(w, G, self.importance.get(name))
        return kernels.q_quantize(np.ascontiguousarray(w, dtype=np.float32), qtype, G)

    def to_json(self) -> str:
        return json.dumps({"dtype": self.dtype, "group_size": self.group_size, "method": self.method,
                           "overrides": self.overrides})

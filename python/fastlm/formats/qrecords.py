"""The quantized record layout the kernels read (QWeight in csrc/kernels/kernels.h), in NumPy:
sizes, packing, splitting and dequantizing records, and GGUF Q8_0 / Q4_0 / Q4_1 blocks turned
into records without a float round trip. The algorithms that choose the quants live in
``fastlm.quant``.

A record holds one weight row: q8 = Kp int8 quants + Kp/G fp16 scales (w = d * q); q4 = Kp/2 bytes
of nibbles + Kp/G fp16 scales + Kp/G fp16 minimums (w = d * q + m, q in 0..15; in each 64 elements
byte j holds element j in its low nibble and 32 + j in its high one). Kp is K rounded up to a
multiple of the group size G (for q4 of 64 too).

``q8`` / ``q4`` name the record layouts (as ``Q8_0`` / ``Q4_1`` name GGUF's); ``int8`` / ``int4``
are the dtypes a user asks for; QTYPES is the one table between the two.

>>> import numpy as np
>>> row_bytes("q8", 64, 32), row_bytes("q4", 64, 32)
(68, 40)
"""
from __future__ import annotations

import numpy as np

FORMAT = "fastlm-quantized"  # safetensors metadata "format" of a checkpoint written by fastlm quantize
FORMAT_VERSION = 1
QTYPES = {"int8": "q8", "int4": "q4"}  # dtype -> record layout
GROUP_SIZES = (32, 64, 128)


def padded_k(qtype: str, K: int, G: int) -> int:
    unit = 64 if qtype == "q4" and G < 64 else G
    return (K + unit - 1) // unit * unit


def row_bytes(qtype: str, K: int, G: int) -> int:
    kp = padded_k(qtype, K, G)
    return kp + 2 * (kp // G) if qtype == "q8" else kp // 2 + 4 * (kp // G)


def check_format(qtype: str, G: int) -> None:
    if qtype not in ("q8", "q4"):
        raise ValueError(f"qtype must be 'q8' or 'q4', got {qtype!r}")
    if G not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {G!r}")


def groups(w: np.ndarray, qtype: str, G: int) -> np.ndarray:
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

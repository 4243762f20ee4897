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
METHODS = ("rtn", "search", "gptq")
# projection -> the part of its tensor names (Llama family; GPT-2's c_attn / c_fc / c_proj aside)
PROJ_NAMES = {"q": "q_proj.", "k": "k_proj.", "v": "v_proj.", "o": "o_proj.", "gate": "gate_proj.", "up": "up_proj.",
              "down": "down_proj."}


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

def _fit_dm(g: np.ndarray, wt: np.ndarray, steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
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


def _q4_from_dm(g: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Quants of g (N, ng, G) for fp16-valued d, m (N, ng), as the kernels dequantize them."""
    df, mf = d.astype(np.float32), m.astype(np.float32)
    inv = np.where(df > 0, np.float32(1) / np.where(df > 0, df, 1), np.float32(0)).astype(np.float32)
    return np.clip(np.rint((g.astype(np.float32) - mf[..., None]) * inv[..., None]), 0, 15)


def quantize_q4_search(w: np.ndarray, G: int = 32, steps: int = 12) -> np.ndarray:
    """4-bit groups whose scale and minimum minimize the squared error, weighted by w^2 + the
    group's mean w^2 (llama.cpp's default without an importance matrix), rather than span the
    range (see _fit_dm)."""
    _check("q4", G)
    g = _groups(w, "q4", G).astype(np.float64)
    N = g.shape[0]
    d, m = _fit_dm(g, g ** 2 + (g ** 2).mean(axis=2, keepdims=True), steps)
    q = _q4_from_dm(g, d, m)
    return records_q4(q.reshape(N, -1), d.astype(np.float16), m.astype(np.float16))


def gptq_q4(w: np.ndarray, H: np.ndarray, G: int = 32, block: int = 128, damp: float = 0.01,
            fit_steps: int = 4, act_order: bool = False) -> np.ndarray:
    """GPTQ (Frantar et al., 2022) into q4 groups: columns are rounded one at a time and each one's
    error is pushed onto the columns not yet rounded, through the inverse of H = X^T X (the inputs'
    second moments from calibration), so it lands where the inputs are small. A group's scale and
    minimum are fitted (as _fit_dm, weighted by diag H) when its first column comes up; with
    act_order, columns go in order of decreasing diag H and every group's (d, m) is fitted up
    front from the original weights ("static groups")."""
    _check("q4", G)
    N, K = w.shape
    if K % G or block % G:
        return quantize_q4_search(w, G)
    W = w.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    dead = np.diag(H) <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H[np.diag_indices(K)] += damp * np.mean(np.diag(H))
    diag_h = np.diag(H).copy()
    D = np.zeros((N, K // G))
    M = np.zeros((N, K // G))
    perm = np.arange(K)
    if act_order:
        g = W.reshape(N, K // G, G)
        D, M = _fit_dm(g, np.broadcast_to(diag_h.reshape(1, K // G, G), g.shape), fit_steps)
        perm = np.argsort(-diag_h, kind="stable")
        W, H = W[:, perm], H[perm][:, perm]
    Hinv = np.linalg.inv(H)
    U = np.linalg.cholesky((Hinv + Hinv.T) / 2).T  # upper: Hinv = U^T U
    Q = np.zeros((N, K))
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            orig = perm[col]
            if not act_order and col % G == 0:
                wg = W1[:, i:i + G][:, None, :]
                d, m = _fit_dm(wg, np.broadcast_to(diag_h[col:col + G], wg.shape), fit_steps)
                D[:, col // G], M[:, col // G] = d[:, 0], m[:, 0]
            dg, mg = D[:, orig // G], M[:, orig // G]
            q = np.where(dg > 0, np.clip(np.rint((W1[:, i] - mg) / np.where(dg > 0, dg, 1)), 0, 15), 0)
            Q[:, orig] = q
            err = (W1[:, i] - (dg * q + mg)) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    kp = padded_k("q4", K, G)
    if kp != K:  # zero padding to a multiple of 64: any quant, the activations there are 0
        Q = np.concatenate([Q, np.zeros((N, kp - K))], axis=1)
        D = np.concatenate([D, np.zeros((N, (kp - K) // G))], axis=1)
        M = np.concatenate([M, np.zeros((N, (kp - K) // G))], axis=1)
    return records_q4(Q, D.astype(np.float16), M.astype(np.float16))


# ---- schemes ----

@dataclass
class QuantScheme:
    """What each tensor becomes. Linear layers: dtype's format in groups of group_size;
    embeddings and the head: q8 in groups of 32 (a 4-bit tied embedding/head costs a small model
    much of its quality); `overrides` maps tensor names to "q8", "q4" or "float"."""

    dtype: str
    group_size: int = 32
    method: str = "rtn"            # "rtn", "search" (4-bit scale/minimum search) or "gptq"
    keep_8bit: tuple = ()          # projections kept at q8 in a 4-bit model: "q", "k", "v", "o", "gate", "up", "down"
    overrides: dict = field(default_factory=dict)
    hessians: dict = field(default_factory=dict)  # tensor name -> (K, K) input second moments (gptq)
    calibration: object = None  # called once, when GPTQ first needs hessians: () -> dict

    def __post_init__(self) -> None:
        if self.dtype not in QTYPES:
            raise ValueError(f"dtype must be 'int8' or 'int4' to quantize, got {self.dtype!r}")
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {self.group_size!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.keep_8bit, str):
            self.keep_8bit = tuple(k for k in self.keep_8bit.split(",") if k)
        bad = [k for k in self.keep_8bit if k not in PROJ_NAMES]
        if bad:
            raise ValueError(f"keep_8bit names unknown projection {bad[0]!r} (known: {', '.join(PROJ_NAMES)})")

    def format_for(self, name: str, embedding: bool = False) -> tuple[str, int] | None:
        """(qtype, group size), or None to keep the tensor in float."""
        kind = self.overrides.get(name)
        if kind == "float":
            return None
        if kind in ("q8", "q4"):
            return kind, (32 if kind == "q8" and embedding else self.group_size)
        if embedding:
            return "q8", 32
        if any(PROJ_NAMES[k] in name for k in self.keep_8bit):
            return "q8", 32
        return QTYPES[self.dtype], self.group_size

    def quantize(self, name: str, w: np.ndarray, qtype: str, G: int) -> np.ndarray:
        from fastlm import kernels

        if qtype == "q4" and self.method == "gptq" and not self.hessians and self.calibration is not None:
            self.hessians = self.calibration()  # only when a tensor needs it (not for GGUF 4-bit blocks)
            self.calibration = None
        if qtype == "q4" and self.method == "gptq" and name in self.hessians:
            return gptq_q4(w, self.hessians[name], G)
        if qtype == "q4" and self.method in ("search", "gptq"):
            return quantize_q4_search(w, G)
        return kernels.q_quantize(np.ascontiguousarray(w, dtype=np.float32), qtype, G)



def calibrate(scheme: QuantScheme, config: dict, store, tokenizer, tokens: int = 2048, progress=None) -> None:
    """For GPTQ: arranges for the float model's linear-input statistics over `tokens` tokens of
    calibration text (fastlm.calibrate) to be computed when the first tensor needs them. Other
    methods need none."""
    if scheme.method != "gptq" or scheme.dtype != "int4":
        return
    from fastlm.calibrate import calibration_text, llama_hessians
    from fastlm.models import ARCHITECTURES, architecture_of

    if ARCHITECTURES.get(architecture_of(config), ("", ""))[1] != "llama":
        raise ValueError("GPTQ calibration runs Llama-family models; use method 'search' for others")
    if tokenizer is None:
        raise ValueError("GPTQ calibration needs the model's tokenizer")
    scheme.calibration = lambda: llama_hessians(config, store, tokenizer.encode(calibration_text())[:tokens],
                                                progress=progress)


# ---- quantized checkpoints ----

def write_quantized(src, out, dtype: str = "int8", group_size: int = 32, method: str = "rtn",
                    keep_8bit: tuple = (), progress=None):
    """Quantizes a Llama-family model (a Hugging Face folder or a GGUF file) into a folder that
    ``Engine.from_pretrained`` loads directly, memory-mapped, with no re-quantization: config.json
    (with a quantization_config), the tokenizer files, and model.safetensors whose linear layers,
    embedding and head are uint8 record tensors (see the module docstring), the rest float32. The
    safetensors metadata records the format, its version and each quantized tensor's kind."""
    from pathlib import Path

    from fastlm.convert import write_safetensors
    from fastlm.hub import resolve
    from fastlm.models import ARCHITECTURES, Loader, architecture_of
    from fastlm.tokenizer import Tokenizer
    from fastlm.weights import open_checkpoint
    from fastlm.weights.gguf import (
        GGUFFile,
        GGUFStore,
        llama_config,
        tokenizer_from_gguf,
    )

    scheme = QuantScheme(dtype, group_size=group_size, method=method, keep_8bit=keep_8bit)
    path = resolve(src)
    if path.is_file():
        f = GGUFFile(path)
        config = llama_config(f)
        store = GGUFStore(f, config["num_attention_heads"], config["num_key_value_heads"])
        backend, tok_config = tokenizer_from_gguf(f)
        tok = Tokenizer(backend, tok_config)
        gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
    else:
        config = json.loads((path / "config.json").read_text())
        store = open_checkpoint(path)
        if getattr(store, "quantized_dtype", None):
            raise ValueError(f"{path} is already quantized ({store.quantized_dtype}); quantize the float model")
        tok = Tokenizer.from_folder_file(path / "tokenizer.json") if (path / "tokenizer.json").exists() else None
        gen_path = path / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    arch = architecture_of(config)
    if ARCHITECTURES.get(arch, ("", ""))[1] != "llama":
        raise ValueError(f"fastlm quantize writes Llama-family models; {arch} can be quantized at load instead")
    calibrate(scheme, config, store, tok, progress=progress)
    ld = Loader(store, dtype, scheme)
    tensors: dict[str, np.ndarray] = {}
    names = store.names()
    for i, name in enumerate(names):
        shape = tuple(store.shape(name))
        if len(shape) == 2 and name.endswith(".weight") and "norm" not in name:
            embedding = name in ("model.embed_tokens.weight", "lm_head.weight")
            rec = ld.records(name, shape, embedding=embedding)
            tensors[name] = np.ascontiguousarray(rec[0]) if rec is not None else ld.f32(name, shape)
        else:
            tensors[name] = ld.f32(name)
        if progress:
            progress(i + 1, len(names))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"version": FORMAT_VERSION, "dtype": dtype, "group_size": group_size, "method": method,
            "keep_8bit": list(scheme.keep_8bit), "tensors": {n: list(v) for n, v in ld.quantized.items()}}
    write_safetensors(out / "model.safetensors", tensors,
                      {"format": FORMAT, "quantization": json.dumps(meta), "source": str(path.name)})
    config = dict(config)
    config["quantization_config"] = {"quant_method": "fastlm", "dtype": dtype, "group_size": group_size,
                                     "method": method, "keep_8bit": list(scheme.keep_8bit),
                                     "format_version": FORMAT_VERSION}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if tok is not None:
        tok.save(out)
    return out

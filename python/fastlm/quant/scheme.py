"""Quantization policy: which tensors become which record format, and by which method."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastlm import _C, kernels
from fastlm.formats.qrecords import GROUP_SIZES, QTYPES, row_bytes
from fastlm.quant.gptq import gptq_q4
from fastlm.quant.search import quantize_q4_search

METHODS = ("rtn", "search", "gptq")
PROJECTIONS = tuple(_C.PROJECTIONS)  # the executor's linear layers: q, k, v, o, gate, up, down


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
        bad = [k for k in self.keep_8bit if k not in PROJECTIONS]
        if bad:
            raise ValueError(f"keep_8bit names unknown projection {bad[0]!r} (known: {', '.join(PROJECTIONS)})")

    def format_for(self, name: str, proj: str | None = None, embedding: bool = False) -> tuple[str, int] | None:
        """(qtype, group size) for tensor `name` (the linear layer `proj` of its decoder layer, or
        an embedding / head), or None to keep it in float."""
        kind = self.overrides.get(name)
        if kind == "float":
            return None
        if kind in ("q8", "q4"):
            return kind, (32 if kind == "q8" and embedding else self.group_size)
        if embedding:
            return "q8", 32
        if proj in self.keep_8bit:
            return "q8", 32
        return QTYPES[self.dtype], self.group_size

    def quantize(self, name: str, w: np.ndarray, qtype: str, G: int, done_rows=None) -> np.ndarray:
        """Records of w (N, K), any float dtype (a memory-mapped view is fine). Round to nearest
        goes through float32 a few MB of rows at a time: no float32 copy of the whole tensor;
        done_rows(r0, r1) is called after each piece (the loader drops its file pages)."""
        if qtype == "q8" or self.method == "rtn":
            N, K = w.shape
            out = np.empty((N, row_bytes(qtype, K, G)), np.uint8)
            step = max(1, (8 << 20) // (4 * max(K, 1)))  # ~8 MB of float32 rows
            for r0 in range(0, N, step):
                rows = np.ascontiguousarray(w[r0:r0 + step], dtype=np.float32)
                if not np.isfinite(rows).all():
                    raise ValueError(f"tensor {name!r} holds NaN or inf: it cannot be quantized")
                out[r0:r0 + step] = kernels.q_quantize(rows, qtype, G)
                if done_rows is not None:
                    done_rows(r0, min(N, r0 + step))
            return out
        w = np.ascontiguousarray(w, dtype=np.float32)
        if not np.isfinite(w).all():
            raise ValueError(f"tensor {name!r} holds NaN or inf: it cannot be quantized")
        if qtype == "q4" and self.method == "gptq" and not self.hessians and self.calibration is not None:
            self.hessians = self.calibration()  # only when a tensor needs it (not for GGUF 4-bit blocks)
            self.calibration = None
        if qtype == "q4" and self.method == "gptq" and name in self.hessians:
            return gptq_q4(w, self.hessians[name], G)
        if qtype == "q4" and self.method in ("search", "gptq"):
            return quantize_q4_search(w, G)
        return kernels.q_quantize(np.ascontiguousarray(w, dtype=np.float32), qtype, G)

"""Loading weights into an executor: tensors fetched by name with checked shapes, converted to the
weight dtype or quantized as the scheme says (records of a quantized checkpoint or GGUF blocks
taken as they are)."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from fastlm.config import DTYPES, QUANT_DTYPES, WEIGHT_DTYPES, ConfigError
from fastlm.formats import Store
from fastlm.formats.qrecords import row_bytes
from fastlm.quant import QuantScheme

# bounds on what a config may ask for, checked before anything is sized by it (the largest models
# people run are well inside them: Llama-3 405B has 126 layers, 16384 wide, 128 heads of 128)
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 20
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_VOCAB = 1 << 22



def architecture_of(config: dict, known: dict[str, str]) -> str:
    """The config's architecture class name: its "architectures" entry, else the one of `known`
    (architecture -> model_type) whose model_type it names."""
    archs = config.get("architectures") or []
    if archs:
        return archs[0]
    model_type = config.get("model_type")
    return next((a for a, mt in known.items() if mt == model_type), str(model_type))


def check_layer_count(store: Store, prefix: str, n_layers: int) -> None:
    """The checkpoint holds no layer at or past n_layers (tensors that would be ignored)."""
    found = set()
    for name in store.names():
        if name.startswith(prefix):
            head = name[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    extra = sorted(i for i in found if i >= n_layers)
    if extra:
        raise ConfigError(f"config says {n_layers} layers, but the checkpoint holds layer {extra[-1]}: the config does "
                          "not describe these weights")


def tied_head(config: dict, store: Store, head_name: str) -> bool:
    """Whether the head is the embedding: tie_word_embeddings says so, or the checkpoint has no
    head and the config does not say otherwise."""
    tie = config.get("tie_word_embeddings")
    if tie is not None and not isinstance(tie, bool):
        raise ConfigError(f"config tie_word_embeddings = {tie!r}: must be true or false")
    if tie:
        return True
    if head_name in store:
        return False
    if tie is False:
        raise ValueError(f"the checkpoint lacks {head_name!r} and config tie_word_embeddings is false: the head "
                         "would be missing")
    return True


NATIVE = "gguf"  # the resolved dtype of a GGUF file run in its own block types


def resolve_dtype(dtype: str, store: Store, names: list[str]) -> str:
    """'auto' keeps the checkpoint's precision: bf16 stays bf16, f32 and f16 run in float32, a
    quantized checkpoint stays quantized, a quantized GGUF file runs in its own block types
    ("gguf": each tensor as the file stores it)."""
    quantized = getattr(store, "quantized_dtype", None)
    if quantized:
        if dtype not in ("auto", quantized):
            raise ValueError(f"this checkpoint is quantized to {quantized}; load it with dtype='auto' or "
                             f"{quantized!r} (quantize the float model for another dtype)")
        return quantized
    if dtype in WEIGHT_DTYPES or dtype in QUANT_DTYPES:
        return dtype
    if dtype != "auto":
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    is_quantized = getattr(store, "is_quantized", None)
    if is_quantized is not None and any(is_quantized(n) for n in names):
        return NATIVE
    kinds = {store.get(n).dtype for n in names if n in store}
    return "bfloat16" if kinds and all(k == np.dtype(ml_dtypes.bfloat16) for k in kinds) else "float32"


class Loader:
    """Fetches tensors by name with checked shapes and converts them to the weight dtype."""

    def __init__(self, store: Store, dtype: str, scheme: QuantScheme | None = None):
        self.store = store
        self.dtype = dtype
        self.scheme = scheme
        if dtype in QUANT_DTYPES and scheme is None:
            stored = getattr(store, "quantized_dtype", None)
            self.scheme = (QuantScheme(stored, store.quantized_group_size, overrides=store.quant_overrides()) if stored
                           else QuantScheme(dtype))
        self.quantized: dict[str, tuple[str, int]] = {}  # tensor -> (qtype, group) as loaded
        self._read: set[str] = set()      # tensors read from the store since the last release()
        self._borrowed: set[str] = set()  # tensors the executor reads in place

    def release(self) -> None:
        """Drops the file pages of the tensors read since the last call, unless the executor reads
        them in place: they have been copied or converted, and would otherwise stay resident
        beside their copies until the file closes (call it after each layer)."""
        drop = getattr(self.store, "release", None)
        if drop is not None:
            for name in self._read - self._borrowed:
                drop(name)
        self._read.clear()

    # ---- quantized weights ----
    def records(self, name: str, shape: tuple[int, int], proj: str | None = None, embedding: bool = False,
                transpose: bool = False) -> tuple[np.ndarray, str, int, bool] | None:
        """(records, qtype, group size, borrowed) for a tensor the scheme quantizes, else None.
        A quantized checkpoint's records are used in place (memory-mapped); GGUF Q8_0/Q4_0/Q4_1
        blocks are rearranged when the layouts agree; float weights are quantized here."""
        if self.dtype == NATIVE and not transpose:  # a GGUF tensor in its own bits (float ones stay float)
            native = self.store.native_records(name)
            if native is None:
                return None
            rec, qtype, G = native
            if rec.shape[0] != shape[0]:
                raise ValueError(f"tensor {name!r} has {rec.shape[0]} rows, the config implies {shape[0]}")
            self.quantized[name] = (qtype, G)
            self._borrowed.add(name)
            return rec, qtype, G, True
        if self.scheme is None:
            return None
        fmt = self.scheme.format_for(name, proj, embedding)
        if fmt is None:
            return None
        qtype, G = fmt
        N, K = shape
        stored = getattr(self.store, "stored_format", lambda n: None)(name)
        if stored is not None:  # a fastlm quantized checkpoint
            qt, g = stored
            rec = self.store.get(name)
            if rec.dtype != np.uint8 or rec.shape != (N, row_bytes(qt, K, g)):
                raise ValueError(f"quantized tensor {name!r} has shape {rec.shape} {rec.dtype}, expected "
                                 f"({N}, {row_bytes(qt, K, g)}) uint8 for {qt} groups of {g}")
            self.quantized[name] = (qt, g)
            self._borrowed.add(name)
            return rec, qt, g, True
        direct = getattr(self.store, "native_records", lambda n: None)(name) if G == 32 and not transpose else None
        # GGUF Q8_0 / Q4_0 / Q4_1 blocks are already the records asked for: borrowed, not copied again
        if direct is not None and direct[1] == qtype and direct[0].shape[0] == N:
            self.quantized[name] = (qtype, 32)
            self._borrowed.add(name)
            return direct[0], qtype, 32, True
        w = self.raw(name, (K, N) if transpose else (N, K))
        release = getattr(self.store, "release", None)
        done = None if transpose or release is None else (lambda r0, r1: release(name, (r0, r1)))
        return self._quantize(name, w.T if transpose else w, qtype, G, done_rows=done)

    def keeps_float(self, name: str) -> bool:
        """Whether the embedding / head `name` loads as a float matrix (not as records)."""
        if self.dtype == NATIVE:
            return not getattr(self.store, "is_quantized", lambda n: False)(name)
        return self.scheme is None or self.scheme.format_for(name, None, embedding=True) is None

    def _quantize(self, name: str, w: np.ndarray, qtype: str, G: int, key: str | None = None, done_rows=None):
        self.quantized[key or name] = (qtype, G)
        return self.scheme.quantize(name, w, qtype, G, done_rows), qtype, G, True

    def set_linear_part(self, model, layer: int, proj: str, name: str, w: np.ndarray, bias=None) -> None:
        """A linear weight (out, in) cut from a fused checkpoint tensor `name` (GPT-2's c_attn holds
        q, k and v): float-converted or quantized as `name` would be."""
        fmt = self.scheme.format_for(name, proj) if self.scheme else None
        if fmt is None:
            model.set_linear(layer, proj, self.convert(w), bias)
            return
        q, qtype, G, borrow = self._quantize(name, w, *fmt, key=f"{name}[{proj}]")
        model.set_linear_q(layer, proj, q, qtype, w.shape[1], G, bias, borrow)

    def set_linear_rows(self, model, layer: int, proj: str, name: str, shape: tuple[int, int], rows: slice) -> None:
        """Rows `rows` of a fused (N, K) tensor `name` as projection proj (Phi-3's q|k|v, gate|up): a
        GGUF tensor running in its own blocks is cut by rows, still borrowed; any other is cut from
        the float tensor and converted or quantized as set_linear_part does."""
        if self.dtype == NATIVE:
            rec = self.records(name, shape, proj)
            if rec is not None:
                q, qtype, G, borrow = rec
                self.quantized.pop(name, None)
                self.quantized[f"{name}[{proj}]"] = (qtype, G)
                model.set_linear_q(layer, proj, q[rows], qtype, shape[1], G, None, borrow)
                return
        self.set_linear_part(model, layer, proj, name, self.raw(name, shape)[rows])

    def set_linear(self, model, layer: int, proj: str, name: str, shape: tuple[int, int], bias=None,
                   transpose: bool = False) -> None:
        """Loads one linear weight (out, in) into the executor, quantized when the dtype says so."""
        rec = self.records(name, shape, proj, transpose=transpose)
        if rec is None:
            model.set_linear(layer, proj, self.weight(name, (shape[1], shape[0]) if transpose else shape, transpose),
                             bias)
        else:
            q, qtype, G, borrow = rec
            model.set_linear_q(layer, proj, q, qtype, shape[1], G, bias, borrow)

    def set_vocab_matrix(self, model, which: str, name: str, shape: tuple[int, int]) -> None:
        """The (vocab, hidden) embedding or lm_head (which: "embedding" / "lm_head"), quantized
        (q8) when the dtype is."""
        rec = self.records(name, shape, embedding=True)
        if rec is None and which == "lm_head" and hasattr(model, "set_lm_head_rows"):
            # packed piece by piece, each piece's file pages dropped after it (a 128K-vocabulary
            # head is the largest tensor by far: whole, it would sit in memory twice at once)
            a, step = self.raw(name, shape), 8192
            release = getattr(self.store, "release", None)
            for r0 in range(0, shape[0], step):
                r1 = min(shape[0], r0 + step)
                model.set_lm_head_rows(self.convert(a[r0:r1]), r0)
                if release is not None and name not in self._borrowed:
                    release(name, (r0, r1))
        elif rec is None:
            getattr(model, f"set_{which}")(self.weight(name, shape))
        else:
            q, qtype, G, borrow = rec
            getattr(model, f"set_{which}_q")(q, qtype, G, borrow)

    def raw(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self.store:
            raise ValueError(f"the checkpoint lacks tensor {name!r}")
        a = self.store.get(name)
        self._read.add(name)
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(a.shape)}, the config implies {tuple(shape)}")
        if a.dtype.kind not in "fV" and a.dtype != np.dtype(ml_dtypes.bfloat16):
            raise ValueError(f"tensor {name!r} has dtype {a.dtype}, expected a float type")
        return a

    def f32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        return np.ascontiguousarray(self.raw(name, shape), dtype=np.float32)

    def weight(self, name: str, shape: tuple[int, ...], transpose: bool = False) -> np.ndarray:
        """A linear weight (out, in) in the weight dtype; transpose=True for Conv1D's (in, out)."""
        a = self.raw(name, shape)
        return self.convert(a.T if transpose else a)

    def convert(self, a: np.ndarray) -> np.ndarray:
        """A float weight kept in float: bf16 in a bf16 model, else float32."""
        if self.dtype == "bfloat16":
            return np.ascontiguousarray(a if a.dtype == np.dtype(ml_dtypes.bfloat16) else
                                        a.astype(np.float32).astype(ml_dtypes.bfloat16))
        return np.ascontiguousarray(a, dtype=np.float32)

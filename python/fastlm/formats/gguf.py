"""GGUF import: the llama.cpp file format, read with NumPy (memory-mapped), into a Hugging Face
layout: config, tensors under HF names (dequantized to float32, Q/K rows put back in Hugging
Face's rotate-half order), the byte-level BPE tokenizer and the chat template from the metadata.

Supported: GGUF v2/v3, the llama, qwen2, qwen3, gemma2, gemma3 and phi3 architectures, tensors F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, tokenizer model "gpt2" (byte-level BPE, as SmolLM2 and
Llama 3 use) or "llama" (SentencePiece).

Quantized tensors also load in their own bits (``GGUFStore.native_records``): Q8_0 / Q4_0 / Q4_1
blocks rearranged losslessly into fastlm's q8 / q4 records, the other block types as the file
stores them (the kernels read them directly, see csrc/kernels/ggml_blocks.h). Dequantization
equals the ``gguf`` package's ``gguf.quants.dequantize`` bit for bit.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from fastlm import kernels
from fastlm.formats.qrecords import from_ggml
from fastlm.formats.safetensors import drop_pages

MAGIC = b"GGUF"
# ggml type -> (name, elements per block, bytes per block)
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
              7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
              12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18),
              23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2)}
FLOAT_TYPES = ("F32", "F16", "BF16")
# the block types the kernels run as the file stores them (the rest of the quantized ones become
# fastlm q8 / q4 records); the kernels' name of each is its lower-case one
NATIVE_BLOCK_TYPES = ("Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4


class GGUFError(ValueError):
    """A GGUF file that cannot be read, or holds something fastlm does not run."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # NumPy order (slowest first): a linear weight is (out, in)
    ggml_type: int
    offset: int  # absolute, in the file
    nbytes: int


class _Cursor:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"{self.path}: truncated (wanted {n} bytes at offset {self.pos} of {len(self.buf)})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        n = self.unpack("Q")
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{self.path}: a string at offset {self.pos} is not UTF-8") from None


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


MAX_ARRAY_DEPTH = 4  # arrays of arrays: GGUF allows them; no model uses more than one level


def _value(c: _Cursor, vtype: int, depth: int = 0):
    if vtype in _SCALARS:
        return c.unpack(_SCALARS[vtype])
    if vtype == 8:
        return c.string()
    if vtype == 9:
        if depth >= MAX_ARRAY_DEPTH:
            raise GGUFError(f"{c.path}: arrays nested more than {MAX_ARRAY_DEPTH} deep at offset {c.pos}")
        etype, n = c.unpack("I"), c.unpack("Q")
        if etype in _SCALARS:  # numeric and bool arrays in one read, bounded by the file
            fmt = _SCALARS[etype]
            size = struct.calcsize(fmt)
            if n * size > len(c.buf) - c.pos:
                raise GGUFError(f"{c.path}: an array of {n} elements does not fit in the file")
            a = np.frombuffer(c.take(n * size), dtype=np.dtype("u1" if fmt == "?" else "<" + fmt))
            return (a != 0).tolist() if fmt == "?" else a.tolist()
        min_size = 8 if etype in (8, 9) else 1  # a string or an array takes at least its 8-byte length
        if n * min_size > len(c.buf) - c.pos:
            raise GGUFError(f"{c.path}: an array of {n} elements does not fit in the file")
        return [_value(c, etype, depth + 1) for _ in range(n)]
    raise GGUFError(f"{c.path}: unknown metadata value type {vtype} at offset {c.pos}")


class GGUFFile:
    """Metadata and tensor directory of a .gguf file; tensor data stays memory-mapped."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        size = self.path.stat().st_size
        if size < 24:  # magic, version and the two counts
            raise GGUFError(f"{self.path}: {size} bytes is too short for a GGUF file")
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        buf = memoryview(self._map)
        c = _Cursor(buf, self.path)
        if bytes(c.take(4)) != MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (bad magic)")
        self.version = c.unpack("I")
        if self.version not in (2, 3):
            raise GGUFError(f"{self.path}: GGUF version {self.version} is not supported (2 and 3 are)")
        n_tensors, n_kv = c.unpack("Q"), c.unpack("Q")
        if n_tensors > len(buf) or n_kv > len(buf):
            raise GGUFError(f"{self.path}: the header counts ({n_tensors} tensors, {n_kv} keys) do not fit the file")
        self.metadata: dict = {}
        for _ in range(n_kv):
            key = c.string()
            if key in self.metadata:
                raise GGUFError(f"{self.path}: metadata key {key!r} appears twice")
            self.metadata[key] = _value(c, c.unpack("I"))
        infos = []
        for _ in range(n_tensors):
            name = c.string()
            n_dims = c.unpack("I")
            if n_dims > 4:
                raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dimensions")
            dims = [c.unpack("Q") for _ in range(n_dims)]
            ggml_type, offset = c.unpack("I"), c.unpack("Q")
            infos.append((name, dims, ggml_type, offset))
        align = self.metadata.get("general.alignment", 32)
        if isinstance(align, bool) or not isinstance(align, int) or align <= 0 or align % 8 or align > 1 << 20:
            raise GGUFError(f"{self.path}: general.alignment = {align!r}: must be a positive multiple of 8")
        data_start = (c.pos + align - 1) // align * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, dims, ggml_type, offset in infos:
            if name in self.tensors:
                raise GGUFError(f"{self.path}: tensor {name!r} appears twice")
            if offset % align:
                raise GGUFError(f"{self.path}: tensor {name!r} starts at data offset {offset}, not a multiple of the "
                                f"alignment {align}")
            if any(d > len(buf) * 8 for d in dims):  # more elements than a file of this size could hold
                raise GGUFError(f"{self.path}: tensor {name!r} has dimensions {dims}, beyond what the file holds")
            if ggml_type not in GGML_TYPES:
                raise GGUFError(f"{self.path}: tensor {name!r} has ggml type {ggml_type}, which fastlm does not read "
                                f"(it reads {', '.join(v[0] for v in GGML_TYPES.values())})")
            type_name, block, block_bytes = GGML_TYPES[ggml_type]
            n = 1
            for d in dims:
                n *= int(d)  # Python ints: no overflow
            if dims and int(dims[0]) % block:  # ggml blocks never straddle rows
                raise GGUFError(f"{self.path}: tensor {name!r} has rows of {dims[0]} elements, not a whole number of "
                                f"{type_name} blocks of {block}")
            nbytes = n // block * block_bytes
            start = data_start + offset
            if start + nbytes > len(buf):
                raise GGUFError(f"{self.path}: tensor {name!r} spans bytes [{start}, {start + nbytes}) beyond the "
                                f"file's {len(buf)}")
            self.tensors[name] = TensorInfo(name, tuple(reversed(dims)), ggml_type, start, nbytes)
        spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in self.tensors.values())
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise GGUFError(f"{self.path}: tensors {a!r} and {b!r} overlap")

    def type_name(self, name: str) -> str:
        return GGML_TYPES[self.tensors[name].ggml_type][0]

    def raw(self, name: str) -> np.ndarray:
        t = self.tensors[name]
        return self._map[t.offset:t.offset + t.nbytes]

    def release(self, name: str, rows: tuple[int, int] | None = None) -> None:
        """Drops tensor `name`'s file pages (or those of its rows [r0, r1) in NumPy order) from
        resident memory (see drop_pages)."""
        t = self.tensors[name]
        begin, end = t.offset, t.offset + t.nbytes
        if rows is not None and t.shape:
            row = t.nbytes // max(t.shape[0], 1)
            begin, end = t.offset + rows[0] * row, t.offset + rows[1] * row
        drop_pages(self._map, begin, end)

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (dequantized), in NumPy order."""
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        t = self.tensors[name]
        return dequantize(self.raw(name), t.ggml_type, t.shape)


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values of a ggml tensor (llama.cpp's dequantize_row_*, vectorized)."""
    name, block, block_bytes = GGML_TYPES[ggml_type]
    if name in NATIVE_BLOCK_TYPES:  # the kernels' exact dequantization (equal to gguf.quants')
        K = shape[-1] if shape else 1
        rows = np.asarray(raw).reshape(-1, K // block * block_bytes)
        return kernels.q_dequantize(rows, name.lower(), K, 0).reshape(shape)
    if name == "F32":
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    if name == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)
    if name == "BF16":
        return np.frombuffer(raw, dtype=ml_dtypes.bfloat16).astype(np.float32).reshape(shape)
    blocks = np.asarray(raw).reshape(-1, block_bytes)
    d = blocks[:, 0:2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    if name == "Q8_0":
        q = blocks[:, 2:34].view(np.int8).astype(np.float32)
        out = d * q
    elif name == "Q4_0":
        qs = blocks[:, 2:18]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.int8) - 8  # low nibbles first
        out = d * q.astype(np.float32)
    elif name == "Q4_1":
        m = blocks[:, 2:4].copy().view("<f2").astype(np.float32)
        qs = blocks[:, 4:20]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)
        out = d * q + m
    else:  # pragma: no cover - GGML_TYPES lists only the above
        raise GGUFError(f"no dequantizer for {name}")
    return out.astype(np.float32, copy=False).reshape(shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter interleaves the rotary halves of each Q/K head; put them back in
    Hugging Face's rotate-half order (what transformers' GGUF loader does too)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFStore:
    """A GGUF file's tensors under Hugging Face Llama names, dequantized on access, Q and K rows in
    Hugging Face's rotate-half order; ``rope_interleaved()`` is the same file with Q and K as
    llama.cpp stores them (for an executor that rotates interleaved pairs: no copy of them)."""

    def __init__(self, f: GGUFFile, n_heads: int, n_kv_heads: int, qk_permuted: bool = True):
        self.f = f
        arch = f.metadata.get("general.architecture", "llama")
        self.metadata: dict = {}
        self._heads = (n_heads, n_kv_heads)
        # llama.cpp permutes Q and K rows to interleaved rope pairs for the llama architecture
        # only; Qwen's files keep Hugging Face's rotate-half order
        self.qk_permuted = qk_permuted
        self._names: dict[str, tuple[str, int | None]] = {}
        for name in f.tensors:
            hf, heads = _hf_name(name, arch), None
            if hf is None:
                continue
            if qk_permuted and name.endswith("attn_q.weight"):
                heads = n_heads
            elif qk_permuted and name.endswith("attn_k.weight"):
                heads = n_kv_heads
            self._names[hf] = (name, heads)

    def rope_interleaved(self) -> "GGUFStore":
        """This file with Q and K rows in llama.cpp's interleaved rope order (nothing unpermuted)."""
        view = GGUFStore(self.f, *self._heads, qk_permuted=self.qk_permuted)
        view._names = {hf: (src, None) for hf, (src, _) in self._names.items()}
        return view

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __iter__(self):
        return iter(self._names)

    def names(self) -> list[str]:
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.f.tensors[self._names[name][0]].shape

    def get(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(f"{self.f.path}: no tensor for {name!r}")
        src, heads = self._names[name]
        w = self.f.get(src)
        return unpermute_qk(w, heads) if heads else w

    def release(self, name: str, rows: tuple[int, int] | None = None) -> None:
        if name in self._names:
            src, heads = self._names[name]
            self.f.release(src, None if heads else rows)  # (unpermuted rows come from all over)

    def is_quantized(self, name: str) -> bool:
        """Whether the matrix under this name is stored in a quantized block type (its header
        only: nothing is read or converted)."""
        if name not in self._names:
            return False
        t = self.f.tensors[self._names[name][0]]
        return len(t.shape) == 2 and GGML_TYPES[t.ggml_type][0] not in FLOAT_TYPES

    def native_records(self, name: str) -> tuple[np.ndarray, str, int] | None:
        """A quantized matrix in its own bits as (records, kernel qtype, group size): Q8_0 / Q4_0 /
        Q4_1 as fastlm q8 / q4 records (G = 32, no float round trip), the other block types as the
        file's rows of blocks (G = their block size); rows unpermuted for Q and K. None for float
        tensors and for anything not a matrix."""
        if name not in self._names:
            return None
        src, heads = self._names[name]
        t = self.f.tensors[src]
        type_name, block, block_bytes = GGML_TYPES[t.ggml_type]
        if len(t.shape) != 2 or type_name in FLOAT_TYPES:
            return None
        if type_name in NATIVE_BLOCK_TYPES:
            rec, qtype, G = self.f.raw(src).reshape(t.shape[0], -1), type_name.lower(), block
        else:
            out = from_ggml(self.f.raw(src), type_name, t.shape)
            if out is None:
                return None
            (rec, qtype), G = out, 32
        return (np.ascontiguousarray(unpermute_qk(rec, heads)) if heads else rec), qtype, G


_LAYER_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


# Gemma's layer norms: ffn_norm is the one before the MLP there, and two more follow attention and the MLP
_GEMMA_NAMES = {**_LAYER_NAMES, "ffn_norm": "pre_feedforward_layernorm", "post_attention_norm": "post_attention_layernorm",
                "post_ffw_norm": "post_feedforward_layernorm"}
GEMMA = ("gemma2", "gemma3")
# Phi-3's q|k|v and gate|up stay fused in the file (ffn_up holds gate then up), as in its checkpoint
_PHI3_NAMES = {**_LAYER_NAMES, "attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}


def _hf_name(name: str, arch: str = "llama") -> str | None:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    names = _GEMMA_NAMES if arch in GEMMA else _PHI3_NAMES if arch == "phi3" else _LAYER_NAMES
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in names:
        return f"model.layers.{parts[1]}.{names[parts[2]]}.{parts[3]}"
    return None


# the llama.* metadata keys the import reads or knows to change nothing; any other key of the
# architecture may change the math, so it is refused by name
_LLAMA_KEYS = {"context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
               "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.dimension_count",
               "vocab_size", "attention.key_length", "attention.value_length", "rope.scaling.type",
               "rope.scaling.factor", "rope.scaling.original_context_length", "rope.scaling.finetuned",
               "expert_count", "expert_used_count"}


# llama.cpp's architecture names -> the transformers class, and the tensors beyond Llama's it has
GGUF_ARCHITECTURES = {"llama": ("LlamaForCausalLM", ()),
                      "qwen2": ("Qwen2ForCausalLM", ("attn_q.bias", "attn_k.bias", "attn_v.bias")),
                      "qwen3": ("Qwen3ForCausalLM", ("attn_q_norm.weight", "attn_k_norm.weight")),
                      "gemma2": ("Gemma2ForCausalLM", ("post_attention_norm.weight", "post_ffw_norm.weight")),
                      "gemma3": ("Gemma3ForCausalLM", ("post_attention_norm.weight", "post_ffw_norm.weight",
                                                       "attn_q_norm.weight", "attn_k_norm.weight")),
                      "phi3": ("Phi3ForCausalLM", ("attn_qkv.weight", "rope_factors_short.weight",
                                                   "rope_factors_long.weight"))}
# tensors an architecture must not have although others do: Phi-3 keeps q|k|v and gate|up fused
_ABSENT = {"phi3": ("attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_gate.weight")}
# the keys llama.cpp writes for Gemma and Phi-3 beyond Llama's
_GEMMA_KEYS = {"attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping"}
_PHI3_KEYS = {"attention.sliding_window", "rope.scaling.attn_factor"}


# a layer's tensors every architecture has; GGUF_ARCHITECTURES names the others each one adds
_COMMON_LAYER_TENSORS = {f"{n}.weight" for n in _LAYER_NAMES} - {"attn_q_norm.weight", "attn_k_norm.weight"}


def _known_tensor(name: str, extra: tuple[str, ...]) -> bool:
    parts = name.split(".")
    if parts[0] != "blk":
        return name == "rope_freqs.weight" or name in extra or _hf_name(name) is not None
    kind = ".".join(parts[2:])
    return len(parts) == 4 and (kind in _COMMON_LAYER_TENSORS or kind in extra)


def gguf_config(f: GGUFFile) -> dict:
    """A transformers config dict (Llama, Qwen2 or Qwen3) from the GGUF metadata."""
    md = f.metadata
    arch = md.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise GGUFError(f"{f.path}: architecture {arch!r} is not supported for GGUF import "
                        f"({', '.join(GGUF_ARCHITECTURES)} are)")
    hf_arch, extra = GGUF_ARCHITECTURES[arch]
    known = _LLAMA_KEYS | (_GEMMA_KEYS if arch in GEMMA else _PHI3_KEYS if arch == "phi3" else set())
    unknown = sorted(k for k in md if k.startswith(arch + ".") and k[len(arch) + 1:] not in known)
    if unknown:
        raise GGUFError(f"{f.path}: metadata key {unknown[0]!r} is not understood by fastlm's {arch} import: the model "
                        "would run half-understood")
    if md.get(f"{arch}.expert_count", 0):
        raise GGUFError(f"{f.path}: {arch}.expert_count = {md[f'{arch}.expert_count']}: mixture-of-experts models "
                        "are not supported")
    if int(md.get(f"{arch}.attention.value_length", 0) or 0) not in (
            0, int(md.get(f"{arch}.attention.key_length", 0) or 0)):
        raise GGUFError(f"{f.path}: {arch}.attention.value_length differs from key_length: not supported")
    unused = sorted(n for n in f.tensors if not _known_tensor(n, extra)
                    or ".".join(n.split(".")[2:]) in _ABSENT.get(arch, ()))
    if unused:
        raise GGUFError(f"{f.path}: tensor {unused[0]!r} is not part of a {arch} model fastlm knows: the model would "
                        "run without it")

    def key(k, default=None):
        v = md.get(f"{arch}.{k}", default)
        if v is None:
            raise GGUFError(f"{f.path}: metadata lacks {arch}.{k}")
        return v

    heads = int(key("attention.head_count"))
    hidden = int(key("embedding_length"))
    vocab = int(md.get(f"{arch}.vocab_size") or len(md.get("tokenizer.ggml.tokens", [])) or 0)
    if vocab <= 0:
        raise GGUFError(f"{f.path}: the vocabulary size is not in the metadata")
    head_dim = int(md.get(f"{arch}.attention.key_length") or hidden // heads)
    rot = int(md.get(f"{arch}.rope.dimension_count") or head_dim)
    if rot != head_dim and arch != "phi3":
        raise GGUFError(f"{f.path}: partial rotary ({rot} of {head_dim} dims) is not supported for {arch}")
    cfg = {
        "architectures": [hf_arch], "model_type": arch,
        "hidden_size": hidden, "num_hidden_layers": int(key("block_count")), "num_attention_heads": heads,
        "num_key_value_heads": int(md.get(f"{arch}.attention.head_count_kv", heads)), "head_dim": head_dim,
        "intermediate_size": int(key("feed_forward_length")), "vocab_size": vocab,
        "max_position_embeddings": int(key("context_length")),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(md.get(f"{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in f.tensors,
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"), "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": md.get("tokenizer.ggml.padding_token_id"), "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
        "from_gguf": True,  # llama.cpp's conventions: Gemma's norms hold 1 + w, its embedding scale is float32
    }
    if "rope_freqs.weight" in f.tensors:  # Llama 3.1 / 3.2: per-frequency divisors, as llama.cpp applies them
        factors = f.get("rope_freqs.weight").astype(np.float32).reshape(-1)
        if factors.shape[0] != rot // 2 or not np.isfinite(factors).all() or (factors <= 0).any():
            raise GGUFError(f"{f.path}: rope_freqs.weight must hold {rot // 2} positive factors, got "
                            f"{factors.shape[0]} values")
        cfg["rope_freq_factors"] = factors.tolist()
    scaling = md.get(f"{arch}.rope.scaling.type")
    if scaling == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(md[f"{arch}.rope.scaling.factor"])}
    elif scaling not in (None, "none"):
        raise GGUFError(f"{f.path}: rope scaling {scaling!r} is not supported for GGUF import")
    if arch in GEMMA:
        cfg.update(_gemma_config(f, arch, cfg))
    if arch == "phi3":
        cfg.update(_phi3_config(f, cfg, rot))
    return cfg


def _phi3_config(f: GGUFFile, cfg: dict, rot: int) -> dict:
    """Phi-3 as llama.cpp writes it: partial rotary from rope.dimension_count, the sliding window,
    and LongRoPE as rope_factors_short / _long tensors with the original context and attention
    factor in the metadata (read into a longrope rope_scaling, as transformers names it)."""
    md = f.metadata
    out = {"partial_rotary_factor": rot / cfg["head_dim"], "sliding_window": md.get("phi3.attention.sliding_window"),
           "pad_token_id": cfg.get("pad_token_id")}
    if "rope_factors_short.weight" in f.tensors or "rope_factors_long.weight" in f.tensors:
        orig = md.get("phi3.rope.scaling.original_context_length")
        if orig is None:
            raise GGUFError(f"{f.path}: LongRoPE factors without phi3.rope.scaling.original_context_length")
        scaling = {"rope_type": "longrope",
                   "short_factor": f.get("rope_factors_short.weight").astype(np.float32).reshape(-1).tolist(),
                   "long_factor": f.get("rope_factors_long.weight").astype(np.float32).reshape(-1).tolist()}
        if md.get("phi3.rope.scaling.attn_factor") is not None:
            scaling["attention_factor"] = float(md["phi3.rope.scaling.attn_factor"])
        out.update(rope_scaling=scaling, original_max_position_embeddings=int(orig))
    return out


def _gemma_config(f: GGUFFile, arch: str, cfg: dict) -> dict:
    """Gemma 2 / 3 as llama.cpp runs them from these keys: the norm weights already hold 1 + w
    (its converter adds the 1), sliding layers every other one (Gemma 2) or five of six (Gemma 3)
    with rope base 10000 and no scaling there (Gemma 3), the global layers on rope.freq_base and its
    scaling; scores scaled by 1 / sqrt(head_dim), or by 1 / sqrt(hidden / heads) for the 27B models
    (46 / 62 layers), as llama.cpp decides it."""
    md = f.metadata
    L, hidden, heads, D = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["head_dim"]
    window = md.get(f"{arch}.attention.sliding_window")
    if window is None:
        raise GGUFError(f"{f.path}: metadata lacks {arch}.attention.sliding_window")
    every = 2 if arch == "gemma2" else 6
    out = {"hidden_activation": "gelu_pytorch_tanh", "sliding_window": int(window),
           "layer_types": ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(L)],
           "query_pre_attn_scalar": hidden // heads if L == (46 if arch == "gemma2" else 62) else D,
           "attn_logit_softcapping": md.get(f"{arch}.attn_logit_softcapping"),
           "final_logit_softcapping": md.get(f"{arch}.final_logit_softcapping")}
    if arch == "gemma3":
        full = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
        if "rope_scaling" in cfg:
            full = {**cfg.pop("rope_scaling"), "rope_theta": cfg["rope_theta"]}
        out["rope_parameters"] = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                  "full_attention": full}
    return out


# tokenizer.ggml.pre -> the split regex llama.cpp and transformers apply before byte-level BPE;
# None: GPT-2's own (the ByteLevel pre-tokenizer's built-in regex). the names llama.cpp writes for
# the families fastlm runs; another name is refused (its merges were learned on a split not known here)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {
    "default": None, "gpt-2": None, "gpt2": None, "smollm": None, "starcoder": None, "refact": None,
    "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT, "falcon3": _LLAMA3_SPLIT, "pixtral": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT, "megrez": _QWEN2_SPLIT,
    "gpt-4o": _GPT4O_SPLIT, "llama4": _GPT4O_SPLIT, "tekken": _TEKKEN_SPLIT,
}
# tokens that end a turn when the vocabulary marks them control (llama.cpp's end-of-generation set)
EOG_TEXTS = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
             "<EOT>", "<|return|>", "<|call|>")


def eog_token_ids(f: "GGUFFile") -> list[int]:
    """The ids that end generation: eos, eot and eom, and the turn-ending control tokens."""
    md = f.metadata
    tokens = md.get("tokenizer.ggml.tokens") or []
    types = md.get("tokenizer.ggml.token_type") or []
    ids = [md[f"tokenizer.ggml.{k}_token_id"] for k in ("eos", "eot", "eom") if md.get(f"tokenizer.ggml.{k}_token_id") is not None]
    ids += [i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == TOKEN_CONTROL and t in EOG_TEXTS]
    return sorted({int(i) for i in ids if 0 <= int(i) < len(tokens)})


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE spells tokens with it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tokenizer_from_gguf(f: GGUFFile):
    """(tokenizers.Tokenizer, tokenizer_config dict) for a byte-level BPE vocabulary, built the way
    transformers builds it from the same file, so ids agree with AutoTokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    md = f.metadata
    model = md.get("tokenizer.ggml.model")
    if model == "llama":
        return _sentencepiece_from_gguf(f)
    if model != "gpt2":
        raise GGUFError(f"{f.path}: tokenizer model {model!r} is not supported (byte-level BPE 'gpt2' and "
                        "SentencePiece 'llama' are)")
    tokens = md.get("tokenizer.ggml.tokens")
    merges = md.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise GGUFError(f"{f.path}: the tokenizer vocabulary or merges are missing")
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for i, t in enumerate(tokens):
        key = t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))
        vocab.setdefault(key, i)
    pairs = [tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    pre = md.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise GGUFError(f"{f.path}: tokenizer.ggml.pre = {pre!r} is not a pre-tokenizer fastlm knows (it knows "
                        f"{', '.join(sorted(PRE_TOKENIZERS))}): its text would be split differently than the model "
                        "was trained on")
    split = PRE_TOKENIZERS[pre]
    if split is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        from tokenizers import Regex

        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # a control token spelled outside the byte alphabet is a llama.cpp mislabel: not added (as in transformers)
    return _with_specials(f, tok, vocab, add_bos_default=False, tokenizer_class="PreTrainedTokenizerFast",
                          control_ok=lambda t: set(t) <= alphabet)


def _with_specials(f: GGUFFile, tok, vocab: dict, add_bos_default: bool, tokenizer_class: str,
                   control_ok=lambda t: True):
    """The steps both vocabularies share, as transformers takes them: control tokens added as
    special, user-defined ones (type 4, like <think>) as whole added tokens, the special tokens'
    texts and the BOS post-processor; returns (tokenizer, tokenizer_config)."""
    from tokenizers import AddedToken, processors

    md = f.metadata
    tokens = md["tokenizer.ggml.tokens"]
    types = md.get("tokenizer.ggml.token_type") or []
    control = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
               if ty == TOKEN_CONTROL and control_ok(t)]
    if control:
        tok.add_special_tokens(control)
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types)
            if ty == TOKEN_USER_DEFINED and t in vocab]
    if user:
        tok.add_tokens(user)

    def tok_at(key):
        i = md.get(f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    config = {"bos_token": tok_at("bos_token_id"), "eos_token": tok_at("eos_token_id"),
              "unk_token": tok_at("unknown_token_id"), "pad_token": tok_at("padding_token_id"),
              "add_bos_token": bool(md.get("tokenizer.ggml.add_bos_token", add_bos_default)),
              "tokenizer_class": tokenizer_class}
    if md.get("tokenizer.chat_template"):
        config["chat_template"] = md["tokenizer.chat_template"]
    if config["add_bos_token"] and config["bos_token"] is not None:
        bos, bos_id = config["bos_token"], md["tokenizer.ggml.bos_token_id"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, bos_id)])
    return tok, config


def merges_from_scores(tokens: list[str], scores: list[float], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """A SentencePiece vocabulary's BPE merges, recovered from its scores: every split of a token
    into two tokens, best-scored merged token first (transformers' generate_merges, the same order)."""
    by_score = dict(zip(tokens, scores))
    merges = []
    for merged, score in by_score.items():
        local = [(merged[:i], merged[i:], score) for i in range(1, len(merged))
                 if merged[:i] in vocab and merged[i:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _sentencepiece_from_gguf(f: GGUFFile):
    """A SentencePiece vocabulary (Llama 2, Mistral, TinyLlama GGUFs) as transformers builds it from
    the same file: BPE over the scores' merges with byte fall-back, "▁" for spaces (one prepended
    to the text), control tokens special, BOS added unless the file says otherwise."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    md = f.metadata
    tokens, scores = md.get("tokenizer.ggml.tokens"), md.get("tokenizer.ggml.scores")
    if not tokens or scores is None or len(scores) != len(tokens):
        raise GGUFError(f"{f.path}: a SentencePiece vocabulary needs tokenizer.ggml.tokens and as many "
                        "tokenizer.ggml.scores")
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = ([tuple(m.split(" ")) for m in md["tokenizer.ggml.merges"]] if md.get("tokenizer.ggml.merges")
              else merges_from_scores(tokens, scores, vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None))
    # llama.cpp prepends a space to the text unless tokenizer.ggml.add_space_prefix is false (Gemma's)
    prefix = md.get("tokenizer.ggml.add_space_prefix", True)
    if not isinstance(prefix, bool):
        raise GGUFError(f"{f.path}: tokenizer.ggml.add_space_prefix must be a bool, got {prefix!r}")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first" if prefix else "never",
                                                 split=False)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1)] if prefix else []))
    # llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise
    return _with_specials(f, tok, vocab, add_bos_default=True, tokenizer_class="LlamaTokenizer")

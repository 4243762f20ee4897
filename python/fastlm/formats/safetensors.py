"""safetensors, read memory-mapped and written: tensors are NumPy views of the file (zero-copy for F32, BF16, F16,
I8 ...). A sharded checkpoint (``model.safetensors.index.json``) opens every shard it names.

The format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets from the end of the header), then the
data. Every field is checked; a malformed file raises SafetensorsError naming the file and tensor.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Iterator

import ml_dtypes
import numpy as np

from fastlm.formats.qrecords import FORMAT, FORMAT_VERSION, GROUP_SIZES

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
MAX_HEADER = 100 * 1024 * 1024


def drop_pages(mapped: np.memmap | None, start: int, end: int) -> None:
    """Drop the pages wholly inside bytes [start, end) of a read-only file mapping from this
    process's resident memory (madvise MADV_DONTNEED; where there is none, nothing happens). The
    pages stay in the page cache and read back if touched again: for tensors the executor has
    copied, which would otherwise count twice in RSS until the file is closed."""
    mm = getattr(mapped, "_mmap", None)
    advise, flag = getattr(mm, "madvise", None), getattr(mmap, "MADV_DONTNEED", None)
    if advise is None or flag is None:
        return
    page = mmap.PAGESIZE
    a, b = -(-start // page) * page, end // page * page
    if b > a:
        advise(flag, a, b - a)


class SafetensorsError(ValueError):
    """A safetensors file that cannot be read as one."""


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class SafetensorsFile:
    """One .safetensors file: its header, and tensors as read-only views of a memory map."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        size = self.path.stat().st_size
        if size < 8:
            raise SafetensorsError(f"{self.path}: {size} bytes is too short for a safetensors file")
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size - 8, MAX_HEADER):
                raise SafetensorsError(f"{self.path}: header length {n} does not fit in a file of {size} bytes")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise SafetensorsError(f"{self.path}: the header is not valid JSON ({type(e).__name__}: {e})") from None
        except _DuplicateKey as e:
            raise SafetensorsError(f"{self.path}: the header names {e.args[0]!r} twice") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: the header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict):
            raise SafetensorsError(f"{self.path}: __metadata__ is not a JSON object")
        self.data_start = 8 + n
        data_len = size - self.data_start
        self.entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            except (TypeError, KeyError, ValueError):
                raise SafetensorsError(f"{self.path}: tensor {name!r} has a malformed entry {info!r}") from None
            if dtype_name not in DTYPES:
                raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise SafetensorsError(f"{self.path}: tensor {name!r} has a bad shape {shape!r}")
            dtype = DTYPES[dtype_name]
            if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_len):
                raise SafetensorsError(f"{self.path}: tensor {name!r} has offsets [{begin}, {end}] outside the "
                                       f"{data_len} bytes of data")
            want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if end - begin != want:
                raise SafetensorsError(f"{self.path}: tensor {name!r} of shape {shape} and dtype {dtype_name} needs "
                                       f"{want} bytes, its offsets span {end - begin}")
            self.entries[name] = (dtype, tuple(shape), begin, end)
        # the tensors cover the data exactly, back to back (as the format requires): a shifted
        # offset, an overlap, a hole or a header length off by one all show here
        pos = 0
        for name, (_, _, begin, end) in sorted(self.entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
            if begin != pos:
                what = "overlaps the tensor before it" if begin < pos else f"leaves bytes [{pos}, {begin}) unused"
                raise SafetensorsError(f"{self.path}: tensor {name!r} at data offset {begin} {what}")
            pos = end
        if pos != data_len:
            raise SafetensorsError(f"{self.path}: the tensors end at data offset {pos}, the file's data holds "
                                   f"{data_len} bytes")
        self._map: np.memmap | None = None

    def _data(self) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map

    def get(self, name: str) -> np.ndarray:
        dtype, shape, begin, end = self.entries[name]
        start = self.data_start + begin
        raw = self._data()[start:start + (end - begin)]
        if (start % dtype.itemsize) != 0:  # unaligned data: copy rather than hand out a misaligned view
            raw = np.array(raw)
        return raw.view(dtype).reshape(shape)

    def release(self, name: str, rows: tuple[int, int] | None = None) -> None:
        """Drops tensor `name`'s file pages (or those of its rows [r0, r1)) from resident memory
        (see drop_pages)."""
        _, shape, begin, end = self.entries[name]
        if rows is not None and shape:
            row = (end - begin) // max(shape[0], 1)
            begin, end = begin + rows[0] * row, begin + rows[1] * row
        drop_pages(self._map, self.data_start + begin, self.data_start + end)


class TensorStore:
    """Tensors of a checkpoint by name, from one file or several shards."""

    def __init__(self, files: list[SafetensorsFile]):
        self.files = files
        self._where: dict[str, SafetensorsFile] = {}
        for f in files:
            for name in f.entries:
                self._where[name] = f
        self.metadata: dict = {}
        for f in files:
            self.metadata.update(f.metadata)
        self.quantized_dtype: str | None = None
        self.quantized_group_size: int | None = None
        self._stored: dict[str, tuple[str, int]] = {}
        if self.metadata.get("format") == FORMAT:
            self._read_quantization()

    def _read_quantization(self) -> None:
        """A checkpoint written by ``fastlm quantize``: which tensors hold q8 / q4 records."""
        where = ", ".join(str(f.path) for f in self.files)
        try:
            q = json.loads(self.metadata["quantization"])
            version, dtype, group = int(q["version"]), q["dtype"], int(q["group_size"])
            tensors = {str(k): (str(v[0]), int(v[1])) for k, v in q["tensors"].items()}
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{where}: malformed fastlm quantization metadata ({e})") from None
        if version > FORMAT_VERSION:
            raise SafetensorsError(f"{where}: quantized format version {version} is newer than this fastlm reads "
                                   f"({FORMAT_VERSION}); upgrade fastlm")
        for name, (qtype, g) in tensors.items():
            if name not in self._where or qtype not in ("q8", "q4") or g not in GROUP_SIZES:
                raise SafetensorsError(f"{where}: quantization metadata names {name!r} as {qtype}/{g}, "
                                       "which the file does not hold")
        self._stored = tensors
        self.quantized_dtype = dtype
        self.quantized_group_size = group

    def quant_overrides(self) -> dict[str, str]:
        """Tensor name -> "q8" / "q4" / "float": what each 2-D tensor of a quantized checkpoint holds."""
        out = {n: "float" for n in self._where if n not in self._stored and len(self.shape(n)) == 2}
        out.update({n: qt for n, (qt, _) in self._stored.items()})
        return out

    def stored_format(self, name: str) -> tuple[str, int] | None:
        """(qtype, group size) of a tensor stored as quantized records, else None."""
        return self._stored.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name].entries[name][1]

    def get(self, name: str) -> np.ndarray:
        if name not in self._where:
            raise KeyError(f"tensor {name!r} is not in the checkpoint ({', '.join(str(f.path) for f in self.files)})")
        return self._where[name].get(name)

    def release(self, name: str, rows: tuple[int, int] | None = None) -> None:
        if name in self._where:
            self._where[name].release(name, rows)


def open_checkpoint(folder: str | os.PathLike) -> TensorStore:
    """The safetensors weights of a Hugging Face model folder (single file or sharded)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SafetensorsError(f"{index}: not a safetensors index ({e})") from None
        shards = sorted(set(weight_map.values()))
        files = []
        for shard in shards:
            p = folder / shard
            if not p.exists():
                raise FileNotFoundError(f"{index} names shard {shard}, which is not in {folder}")
            files.append(SafetensorsFile(p))
        return TensorStore(files)
    single = folder / "model.safetensors"
    if single.exists():
        return TensorStore([SafetensorsFile(single)])
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return TensorStore([SafetensorsFile(p) for p in found])
    raise FileNotFoundError(f"no safetensors weights in {folder} (model.safetensors or model.safetensors.index.json)")


_WRITE_DTYPES = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float16): "F16",
              np.dtype(np.uint8): "U8"}


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """A .safetensors file: header (8-byte aligned), then each tensor's bytes; wider types first
    so that every tensor stays aligned to its element size in a memory map."""
    tensors = dict(sorted(tensors.items(), key=lambda kv: -kv[1].dtype.itemsize))
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, a in tensors.items():
        if a.dtype not in _WRITE_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} cannot be written")
        header[name] = {"dtype": _WRITE_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a).tobytes())

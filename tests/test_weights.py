"""safetensors reading and model loading: malformed files and mismatched checkpoints raise clear
errors naming the file or tensor, never a crash."""
from __future__ import annotations

import json
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest
from fastlm import Engine
from fastlm.formats import SafetensorsError, open_checkpoint
from fastlm.formats.safetensors import SafetensorsFile
from safetensors.numpy import save_file
from tiny_models import build


def write_raw(path, header: dict, data: bytes):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def test_reads_what_safetensors_writes_zero_copy(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3)
    c = np.arange(5, dtype=np.float16)
    save_file({"a": a, "b": b, "c": c}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    store = open_checkpoint(tmp_path)
    np.testing.assert_array_equal(store.get("a"), a)
    assert store.get("b").dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(store.get("b").astype(np.float32), b.astype(np.float32))
    np.testing.assert_array_equal(store.get("c"), c)
    assert isinstance(store.get("a").base, np.ndarray)  # a view of the map, not a copy
    assert store.metadata == {"format": "pt"}


@pytest.mark.parametrize("case,match", [
    ("short", "too short"),
    ("header_len", "does not fit"),
    ("json", "not valid JSON"),
    ("dtype", "unsupported dtype"),
    ("offsets", "outside"),
    ("size", "needs 16 bytes"),
    ("shape", "bad shape"),
    ("entry", "malformed entry"),
])
def test_malformed_files(tmp_path, case, match):
    p = tmp_path / "model.safetensors"
    data = np.arange(4, dtype=np.float32).tobytes()
    if case == "short":
        p.write_bytes(b"\x01\x02")
    elif case == "header_len":
        p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    elif case == "json":
        p.write_bytes(struct.pack("<Q", 5) + b"{nope" + data)
    elif case == "dtype":
        write_raw(p, {"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, data)
    elif case == "offsets":
        write_raw(p, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, data[:8])  # truncated
    elif case == "size":
        write_raw(p, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, data)
        match = "needs 16 bytes"
    elif case == "shape":
        write_raw(p, {"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, data)
    elif case == "entry":
        write_raw(p, {"w": {"dtype": "F32"}}, data)
    with pytest.raises(SafetensorsError, match=match) as info:
        SafetensorsFile(p)
    assert str(p) in str(info.value)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build("llama", tmp_path_factory.mktemp("llama"))


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_and_misshaped_tensors(tmp_path, llama_dir):
    from safetensors.numpy import load_file

    d = copy_model(llama_dir, tmp_path / "m")
    tensors = load_file(str(d / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
        Engine.from_pretrained(d)

    tensors = load_file(str(llama_dir / "model.safetensors"))
    tensors["model.layers.0.self_attn.k_proj.weight"] = tensors["model.layers.0.self_attn.k_proj.weight"][:, :10].copy()
    save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"k_proj.weight.*shape \(32, 10\).*\(32, 64\)"):
        Engine.from_pretrained(d)


def test_tensor_of_the_wrong_dtype(tmp_path, llama_dir):
    from safetensors.numpy import load_file

    d = copy_model(llama_dir, tmp_path / "m")
    tensors = load_file(str(d / "model.safetensors"))
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int32)
    save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="model.norm.weight' has dtype int32"):
        Engine.from_pretrained(d)


def test_truncated_checkpoint(tmp_path, llama_dir):
    d = copy_model(llama_dir, tmp_path / "m")
    blob = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SafetensorsError, match="outside"):
        Engine.from_pretrained(d)


def test_folder_errors(tmp_path, llama_dir):
    with pytest.raises(FileNotFoundError, match="neither a local path nor a known alias"):
        Engine.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Engine.from_pretrained(tmp_path / "empty")
    d = copy_model(llama_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FalconForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported architecture 'FalconForCausalLM'"):
        Engine.from_pretrained(d)
    (d / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        Engine.from_pretrained(d)
    e = copy_model(llama_dir, tmp_path / "e")
    (e / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no safetensors"):
        Engine.from_pretrained(e)


def test_sharded_index_naming_a_missing_shard(tmp_path):
    d = build("sharded", tmp_path / "s")
    shards = sorted(d.glob("model-*.safetensors"))
    assert len(shards) > 1 and (d / "model.safetensors.index.json").exists()
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=shards[-1].name):
        Engine.from_pretrained(d)

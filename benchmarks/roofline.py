"""Decode against the memory roofline, at two model sizes: fastlm's float and quantized weights next
to llama.cpp (native llama-bench / llama-batched-bench, when built) on the same weights, with the
streaming read bandwidth measured in the same run, rounds interleaved.

    python benchmarks/roofline.py [--bin LLAMA_CPP/build/bin] [--sizes smol 1b] [--rounds 3]
                                  [--tokens 64] [--batch 16] [--json out.json]

Models (built once into the cache folder, fixed seeds):
- smol: SmolLM2-135M-Instruct, as an F16 GGUF of the default model's (dequantized Q4_1) weights;
- 1b: a random-weight model of Llama-3.2-1B's shape (hidden 2048, 16 layers, 32/8 heads, ffn
  8192, vocab 128256, tied), built with transformers from seed 0 and saved as bf16 safetensors,
  and the same tensors written as an F16 GGUF for llama.cpp.
fastlm runs each size in float32 / bfloat16 / int8 / int4 (quantized at load from the float
weights) and the llama.cpp-quantized Q4_K_M file in its own blocks; llama.cpp runs F16, Q8_0,
Q4_0 and Q4_K_M, made by its llama-quantize from the same F16 file. B=1: tg of --tokens after a
one-token prompt; B=batch: --batch sequences decoding together (llama-batched-bench's S_TG).
Each row prints tokens/s, the bytes a token reads (the weights; the KV cache of a short context
is negligible beside them), the implied GB/s and its share of the measured bandwidth, and the
ratio to its llama.cpp peer in the same round. Medians over rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fastlm import Engine, _C, get_num_threads
from fastlm.hub import DEFAULT_MODEL, cache_dir, resolve

sys.path.insert(0, str(Path(__file__).parent))
from compare_engines import float_gguf  # noqa: E402

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096, tie_word_embeddings=True,
                rope_theta=500000.0, rms_norm_eps=1e-5)
# fastlm dtype -> the llama.cpp type it is compared with (float32 against F32 for smol only: a 1B
# F32 file would be 5 GB)
PEERS = {"float32": "F32", "bfloat16": "F16", "int8": "Q8_0", "int4": "Q4_0", "Q4_K_M": "Q4_K_M"}


def bench_dir() -> Path:
    d = cache_dir() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def llama_1b_folder() -> Path:
    """The 1B-shaped random model as a Hugging Face folder (bf16 safetensors), built once."""
    out = bench_dir() / "llama1b-hf"
    if (out / "model.safetensors").exists():
        return out
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(bos_token_id=1, eos_token_id=2, **LLAMA_1B)
    transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(out))
    return out


def llama_1b_gguf(folder: Path) -> Path:
    """The folder's tensors as an F16 GGUF in llama.cpp's layout (Q and K rows permuted to its
    interleaved rope pairs); the vocabulary is the default model's, padded with unused tokens."""
    import gguf
    from fastlm.formats import open_checkpoint
    from fastlm.formats.gguf import GGUFFile

    out = bench_dir() / "llama1b.F16.gguf"
    if out.exists():
        return out
    c = LLAMA_1B
    V, H, Hkv = c["vocab_size"], c["num_attention_heads"], c["num_key_value_heads"]
    md = GGUFFile(resolve(DEFAULT_MODEL)).metadata
    tokens = list(md["tokenizer.ggml.tokens"])[:V]
    types = list(md["tokenizer.ggml.token_type"])[:V]
    tokens += [f"<unused{i}>" for i in range(V - len(tokens))]
    types += [5] * (V - len(types))
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_vocab_size(V)
    w.add_rope_dimension_count(c["hidden_size"] // H)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(list(md["tokenizer.ggml.merges"]))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    store = open_checkpoint(folder)

    def f16(name):
        return store.get(name).astype(np.float32).astype(np.float16)

    def permute(a, heads):  # llama.cpp's convert_hf_to_gguf permute: rotate-half -> interleaved pairs
        return a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)

    w.add_tensor("token_embd.weight", f16("model.embed_tokens.weight"))
    w.add_tensor("output_norm.weight", store.get("model.norm.weight").astype(np.float32))
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", store.get(p + "input_layernorm.weight").astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", store.get(p + "post_attention_layernorm.weight").astype(np.float32))
        for g, hf in names.items():
            a = f16(p + hf + ".weight")
            if g in ("attn_q", "attn_k"):
                a = permute(a, H if g == "attn_q" else Hkv)
            w.add_tensor(f"blk.{i}.{g}.weight", a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def quantized_gguf(bin_dir: str, f16: Path, kind: str) -> Path:
    out = f16.with_name(f16.name.replace(".F16.", f".{kind}."))
    if not out.exists():
        subprocess.run([str(Path(bin_dir) / "llama-quantize"), "--allow-requantize", str(f16), str(out), kind],
                       check=True, capture_output=True)
    return out


def read_bandwidth() -> float:
    """GB/s of a streaming read of 1 GiB on the pool's threads (best of 3)."""
    return _C.read_bandwidth(1 << 30, 3) / 1e9


class FastLM:
    def __init__(self, path: Path, dtype: str):
        self.e = Engine.from_pretrained(path, dtype=dtype, max_seq_len=512)
        self.bytes = self.e.model.weight_bytes

    def decode(self, batch: int, tokens: int) -> float:
        rng = np.random.default_rng(0)
        with self.e.hold() as s:
            s.ensure(batch)
            for b in range(batch):
                s.truncate(b, 0)
                s.prefill(b, [1])
            toks = [int(t) for t in rng.integers(3, 1000, batch)]
            s.decode(list(range(batch)), toks)  # warm
            t = time.perf_counter()
            for _ in range(tokens):
                lg = s.decode(list(range(batch)), toks)
                toks = [int(np.argmax(r)) for r in lg]
            return batch * tokens / (time.perf_counter() - t)


def llama_bench(bin_dir: str, path: Path, tokens: int) -> float:
    cmd = [str(Path(bin_dir) / "llama-bench"), "-m", str(path), "-t", str(get_num_threads()), "-p", "0",
           "-n", str(tokens), "-r", "1", "--repack", "0", "-o", "json"]
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return float(rows[0]["avg_ts"])


def llama_batched(bin_dir: str, path: Path, batch: int, tokens: int) -> float:
    cmd = [str(Path(bin_dir) / "llama-batched-bench"), "-m", str(path), "-t", str(get_num_threads()), "-c",
           str(batch * (tokens + 16)), "-b", "2048", "-ub", "512", "-npp", "1", "-ntg", str(tokens), "-npl",
           str(batch), "--no-repack", "--output-format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return float(rows[-1]["speed_tg"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=None, help="llama.cpp's build/bin (llama-bench, llama-batched-bench, "
                                                "llama-quantize); without it fastlm runs alone")
    ap.add_argument("--sizes", nargs="+", default=["smol", "1b"], choices=["smol", "1b"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8", "int4", "Q4_K_M"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="the batched row's sequences (0: none)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    cases = []  # (size, engine, dtype, runner)
    for size in a.sizes:
        if size == "smol":
            f16 = float_gguf(resolve(DEFAULT_MODEL), "F16")
            folder = f16
        else:
            folder = llama_1b_folder()
            f16 = llama_1b_gguf(folder) if a.bin else None
        for dtype in a.dtypes:
            if dtype == "Q4_K_M":
                if not a.bin:
                    continue
                cases.append((size, "fastlm", dtype, FastLM(quantized_gguf(a.bin, f16, "Q4_K_M"), "auto")))
            else:
                cases.append((size, "fastlm", dtype, FastLM(folder, dtype)))
        if a.bin:
            for kind in sorted({PEERS[d] for d in a.dtypes}, key=list(PEERS.values()).index):
                if kind == "F32" and size != "smol":
                    continue
                path = {"F16": f16, "F32": float_gguf(resolve(DEFAULT_MODEL), "F32") if kind == "F32" else None}.get(
                    kind) or quantized_gguf(a.bin, f16, kind)
                cases.append((size, "llama.cpp", kind, path))
    results: dict[tuple, dict[str, list[float]]] = {}
    bandwidth = []
    for r in range(a.rounds):
        bandwidth.append(read_bandwidth())
        for size, engine, dtype, runner in cases:
            row = results.setdefault((size, engine, dtype), {"tg": [], "batch": []})
            if engine == "fastlm":
                row["tg"].append(runner.decode(1, a.tokens))
                if a.batch:
                    row["batch"].append(runner.decode(a.batch, a.tokens))
            else:
                row["tg"].append(llama_bench(a.bin, runner, a.tokens))
                if a.batch:
                    row["batch"].append(llama_batched(a.bin, runner, a.batch, a.tokens))
        print(f"round {r + 1}/{a.rounds}: bandwidth {bandwidth[-1]:.1f} GB/s", file=sys.stderr, flush=True)
    bw = statistics.median(bandwidth)
    byte_count = {}
    for size, engine, dtype, runner in cases:
        byte_count[(size, engine, dtype)] = runner.bytes if engine == "fastlm" else Path(runner).stat().st_size
    print(f"CPU threads {get_num_threads()}, isa {cases[0][3].e.model.isa if cases else '?'}; streaming read "
          f"bandwidth {bw:.1f} GB/s (median of {len(bandwidth)}: {', '.join(f'{b:.1f}' for b in bandwidth)})\n")
    print(f"| size | engine | weights | MB read / token | tg{a.tokens} tok/s | GB/s | % of {bw:.1f} GB/s | vs llama.cpp "
          f"| B={a.batch} aggregate tok/s | vs llama.cpp |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    out = {"bandwidth_GBps": bandwidth, "rows": []}
    for (size, engine, dtype), row in results.items():
        tg = statistics.median(row["tg"])
        bt = statistics.median(row["batch"]) if row["batch"] else None
        mb = byte_count[(size, engine, dtype)] / 1e6
        gbs = tg * mb / 1e3
        peer = results.get((size, "llama.cpp", PEERS.get(dtype, ""))) if engine == "fastlm" else None
        ratio = f"{tg / statistics.median(peer['tg']):.2f}x {PEERS[dtype]}" if peer else ""
        bratio = (f"{bt / statistics.median(peer['batch']):.2f}x" if peer and bt and peer["batch"] else "")
        print(f"| {size} | {engine} | {dtype} | {mb:.0f} | {tg:.1f} | {gbs:.1f} | {100 * gbs / bw:.0f}% | {ratio} | "
              f"{'' if bt is None else f'{bt:.1f}'} | {bratio} |")
        out["rows"].append({"size": size, "engine": engine, "dtype": dtype, "MB": mb, "tg": row["tg"],
                            "batch": row["batch"]})
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

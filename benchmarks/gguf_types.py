"""GGUF files in their own block types: fastlm next to llama.cpp (native llama-bench) on the same
files, interleaved round by round, and fastlm's logits against transformers on the same file.

    # llama.cpp's tools, built once (see README, "Benchmarks"): llama-bench and llama-quantize
    python benchmarks/gguf_types.py make --bin LLAMA_CPP/build/bin --out DIR
        # DIR/smol.{Q4_K_M,Q5_K_M,Q6_K}.gguf: the default model requantized by llama-quantize;
        # DIR/llama1b.{Q4_K_M,Q6_K}.gguf: a random-weight model of Llama-3.2-1B's shape
    python benchmarks/gguf_types.py speed --bin LLAMA_CPP/build/bin DIR/*.gguf [--rounds 3]
    python benchmarks/gguf_types.py quality DIR/smol.*.gguf [--tokens 512]

speed: pp512 and tg64 tokens/s, medians over rounds (each round runs llama-bench once with
-r 1 and fastlm once, in turn), the ratio fastlm / llama.cpp, and the decode roofline (bytes read
per token: the file's tensor bytes). llama.cpp runs with --repack 0 (its AMX / repacked path
crashes on some CPUs here). quality: KL and top-1 of fastlm against transformers (which
dequantizes the same file) over a text, on the prefill path (float activations) and on the decode
path (one token at a time, activations quantized in blocks).
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
from fastlm import Engine, get_num_threads
from fastlm.hub import DEFAULT_MODEL, resolve

LLAMA_1B = dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256, context=4096)


def write_random_llama(out: Path, hidden: int, layers: int, heads: int, kv_heads: int, ffn: int, vocab: int,
                       context: int, seed: int = 0) -> Path:
    """An F16 GGUF of a random-weight Llama (tied head), llama.cpp's layout: speed only (its text
    is noise). The vocabulary is byte-level BPE padded with unused tokens to `vocab`."""
    import gguf

    src = resolve(DEFAULT_MODEL)
    from fastlm.formats.gguf import GGUFFile

    md = GGUFFile(src).metadata
    tokens = list(md["tokenizer.ggml.tokens"])[:vocab]
    types = list(md["tokenizer.ggml.token_type"])[:vocab]
    tokens += [f"<unused{i}>" for i in range(vocab - len(tokens))]
    types += [5] * (vocab - len(types))
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_context_length(context)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(list(md["tokenizer.ggml.merges"]))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    D = hidden // heads

    def mat(n, k):
        return (rng.standard_normal((n, k), dtype=np.float32) * (1 / np.sqrt(k))).astype(np.float16)

    w.add_tensor("token_embd.weight", mat(vocab, hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(heads * D, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(kv_heads * D, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(kv_heads * D, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(hidden, heads * D))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(hidden, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def cmd_make(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quantize = str(Path(args.bin) / "llama-quantize")
    src = resolve(DEFAULT_MODEL)
    for t in ("Q4_K_M", "Q5_K_M", "Q6_K"):
        dst = out / f"smol.{t}.gguf"
        if not dst.exists():
            subprocess.run([quantize, "--allow-requantize", str(src), str(dst), t], check=True, capture_output=True)
        print(dst)
    f16 = out / "llama1b.F16.gguf"
    if not f16.exists():
        write_random_llama(f16, **LLAMA_1B)
    for t in ("Q4_K_M", "Q6_K"):
        dst = out / f"llama1b.{t}.gguf"
        if not dst.exists():
            subprocess.run([quantize, str(f16), str(dst), t], check=True, capture_output=True)
        print(dst)


def llama_bench(bin_dir: str, path: Path, n_prompt: int, n_gen: int) -> dict[str, float]:
    cmd = [str(Path(bin_dir) / "llama-bench"), "-m", str(path), "-t", str(get_num_threads()), "-p", str(n_prompt),
           "-n", str(n_gen), "-r", "1", "--repack", "0", "-o", "json"]
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {("pp" if r["n_prompt"] else "tg"): float(r["avg_ts"]) for r in rows}


class FastLM:
    def __init__(self, path: Path):
        self.e = Engine.from_pretrained(path, max_seq_len=2048)
        self.s = self.e.slots
        self.s.ensure(1)
        self.rng = np.random.default_rng(0)

    def run(self, n_prompt: int, n_gen: int) -> dict[str, float]:
        vocab = self.e.vocab_size
        toks = self.rng.integers(0, vocab, size=n_prompt).tolist()
        self.s.truncate(0, 0)
        self.s.prefill(0, toks[:8])  # warm
        self.s.truncate(0, 0)
        t = time.perf_counter()
        self.s.prefill(0, toks)
        pp = n_prompt / (time.perf_counter() - t)
        self.s.truncate(0, 0)
        self.s.prefill(0, [1])
        tok = 1
        t = time.perf_counter()
        for _ in range(n_gen):
            tok = int(np.argmax(self.s.decode([0], [tok])[0]))
        tg = n_gen / (time.perf_counter() - t)
        self.s.truncate(0, 0)
        return {"pp": pp, "tg": tg}


def tensor_bytes(path: Path) -> int:
    from fastlm.formats.gguf import GGUFFile

    return sum(t.nbytes for t in GGUFFile(path).tensors.values())


def cmd_speed(args) -> None:
    from fastlm import _C

    cpu = _C.cpu_info()
    print(f"# {cpu['brand']}, {get_num_threads()} threads, fastlm kernels {_C.get_isa()}; pp{args.prefill} / "
          f"tg{args.decode}, medians of {args.rounds} interleaved rounds")
    print("| file | bytes/token | test | llama.cpp t/s | fastlm t/s | fastlm / llama.cpp | fastlm GB/s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    results = []
    for f in map(Path, args.files):
        eng = FastLM(f)
        nbytes = tensor_bytes(f)
        runs = {"llama.cpp": [], "fastlm": []}
        for _ in range(args.rounds):
            runs["llama.cpp"].append(llama_bench(args.bin, f, args.prefill, args.decode))
            runs["fastlm"].append(eng.run(args.prefill, args.decode))
        for test in ("pp", "tg"):
            lc = statistics.median(r[test] for r in runs["llama.cpp"])
            fl = statistics.median(r[test] for r in runs["fastlm"])
            gbs = f"{fl * nbytes / 1e9:.1f}" if test == "tg" else ""
            n = args.prefill if test == "pp" else args.decode
            print(f"| {f.name} | {nbytes / 1e6:.1f} MB | {test}{n} | {lc:.1f} | {fl:.1f} | {fl / lc:.2f} | {gbs} |",
                  flush=True)
            results.append({"file": f.name, "test": f"{test}{n}", "llama.cpp": lc, "fastlm": fl, "ratio": fl / lc,
                            "rounds": runs})
        del eng
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def cmd_quality(args) -> None:
    import torch
    import transformers

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    print("| file | path | KL vs transformers | top-1 |")
    print("|---|---|---:|---:|")
    for f in map(Path, args.files):
        eng = Engine.from_pretrained(f)
        ids = eng.tokenize(text)[:args.tokens]
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name,
                                                               dtype=torch.float32).eval()
        with torch.no_grad():
            ref = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1)
        del hf

        def score(logits):
            q = torch.log_softmax(torch.tensor(np.asarray(logits)).double(), -1)
            return float((ref.exp() * (ref - q)).sum(-1).mean()), float((q.argmax(-1) == ref.argmax(-1)).double().mean())

        with eng.hold() as s:
            s.ensure(1)
            s.truncate(0, 0)
            rows = [np.asarray(s.prefill(0, ids[:1])).reshape(-1)]
            rows += [s.decode([0], [t])[0] for t in ids[1:]]
            s.truncate(0, 0)
        for name, logits in (("prefill (float activations)", eng.logits(ids)), ("decode", np.stack(rows))):
            kl, top1 = score(logits)
            print(f"| {f.name} | {name} | {kl:.5f} | {top1:.1%} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--bin", required=True, help="the folder of llama-quantize")
    m.add_argument("--out", required=True)
    s = sub.add_parser("speed")
    s.add_argument("files", nargs="+")
    s.add_argument("--bin", required=True, help="the folder of llama-bench")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--prefill", type=int, default=512)
    s.add_argument("--decode", type=int, default=64)
    s.add_argument("--json", default=None)
    q = sub.add_parser("quality")
    q.add_argument("files", nargs="+")
    q.add_argument("--tokens", type=int, default=512)
    args = p.parse_args()
    {"make": cmd_make, "speed": cmd_speed, "quality": cmd_quality}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

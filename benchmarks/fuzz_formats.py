"""Long fuzz runs of the model file readers and the kernels (the suite runs a seeded few):

    python benchmarks/fuzz_formats.py [--loader-cases 10000] [--kernel-calls 1000] [--seed 0]

Each loader case mutates a valid safetensors model folder or GGUF file (bytes flipped in the
header, truncated, lengths and offsets rewritten) and loads it with Engine.from_pretrained in a
child process (a crash or a hang is seen, not suffered), bounded to 60 s and 4 GB of address space.
Prints counts by outcome: loaded, each exception type, crash, hang. Kernel calls draw shapes,
dtypes, overlapping outputs and NaNs at random and count the same way."""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from fastlm import Engine
try:
    e = Engine.from_pretrained(sys.argv[1], max_seq_len=64)
    e.generate([1, 2, 3], max_tokens=2)
    print("OUTCOME loaded")
except Exception as ex:
    print("OUTCOME " + type(ex).__name__)
"""


def mutate(raw: bytes, rng: random.Random, head: int) -> bytes:
    b = bytearray(raw)
    kind = rng.choice(["flip", "flip", "u64", "truncate"])
    if kind == "truncate":
        return bytes(b[:rng.randrange(len(b))])
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(min(head, len(b)))
        if kind == "u64" and pos + 8 <= len(b):
            b[pos:pos + 8] = rng.choice([0, 1, 2 ** 31 - 1, 2 ** 32, 2 ** 54, 2 ** 63, 2 ** 64 - 1]).to_bytes(8, "little")
        else:
            b[pos] = rng.randrange(256)
    return bytes(b)


def run_loader(cases: int, rng: random.Random) -> collections.Counter:
    from tiny_gguf import build as build_gguf
    from tiny_models import build as build_hf

    tmp = Path(tempfile.mkdtemp(prefix="fastlm-fuzz-"))
    gguf = build_gguf(tmp / "g").read_bytes()
    hf = build_hf("llama", tmp / "hf")
    st = (hf / "model.safetensors").read_bytes()
    cfg = (hf / "config.json").read_bytes()
    counts: collections.Counter = collections.Counter()
    for i in range(cases):
        case = tmp / "case"
        case.mkdir(exist_ok=True)
        which = rng.choice(["gguf", "safetensors", "config"])
        if which == "gguf":
            target = case / "m.gguf"
            target.write_bytes(mutate(gguf, rng, 1 << 16))
        else:
            target = case / "hf"
            target.mkdir(exist_ok=True)
            (target / "model.safetensors").write_bytes(mutate(st, rng, 4096) if which == "safetensors" else st)
            (target / "config.json").write_bytes(mutate(cfg, rng, len(cfg)) if which == "config" else cfg)
        try:
            r = subprocess.run([sys.executable, "-c", CHILD, str(target)], capture_output=True, text=True, timeout=60)
            line = next((x for x in r.stdout.splitlines() if x.startswith("OUTCOME ")), None)
            outcome = line.split(" ", 1)[1] if line else f"crash (exit {r.returncode})"
        except subprocess.TimeoutExpired:
            outcome = "hang"
        counts[f"{which}: {outcome}"] += 1
        if (i + 1) % 500 == 0:
            print(f"{i + 1}/{cases} loader cases: {dict(counts)}", file=sys.stderr, flush=True)
    return counts


def run_kernels(calls: int, rng: random.Random) -> collections.Counter:
    import numpy as np
    from fastlm import kernels as K

    counts: collections.Counter = collections.Counter()
    for _ in range(calls):
        M, N, Kd = rng.choice([1, 3, 64]), rng.choice([1, 7, 64]), rng.choice([1, 32, 65])
        dt = rng.choice([np.float32, np.float32, np.float64, np.int8])
        x = np.random.default_rng(rng.randrange(1 << 30)).standard_normal((M, Kd)).astype(dt)
        if rng.random() < 0.2 and x.dtype == np.float32:
            x.flat[rng.randrange(x.size)] = np.nan
        w = np.random.default_rng(rng.randrange(1 << 30)).standard_normal((N, Kd)).astype(np.float32)
        big = np.zeros(M * max(N, Kd) * 2, np.float32)
        out = big[:M * Kd].reshape(M, Kd) if rng.random() < 0.3 else None
        op = rng.choice(["matmul", "rms_norm", "softmax", "add", "q_quantize", "attention"])
        try:
            if op == "matmul":
                K.matmul(x, w)
            elif op == "rms_norm":
                K.rms_norm(x, np.ones(Kd, np.float32), 1e-5, out=out)
            elif op == "softmax":
                K.softmax(x, out=out)
            elif op == "add":
                K.add(x, x, out=out if rng.random() < 0.5 else big[1:1 + M * Kd].reshape(M, Kd))
            elif op == "q_quantize":
                K.q_quantize(w if rng.random() < 0.8 else x, rng.choice(["q8", "q4", "q5"]), rng.choice([32, 48]))
            else:
                q = x.reshape(1, M, Kd)
                K.attention(q, q, q, causal=rng.random() < 0.5, scale=rng.choice([None, 0.5, "x"]))
            counts[f"{op}: ok"] += 1
        except Exception as ex:  # noqa: BLE001 - counted by type
            counts[f"{op}: {type(ex).__name__}"] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loader-cases", type=int, default=10000)
    ap.add_argument("--kernel-calls", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    kern = run_kernels(args.kernel_calls, rng)
    load = run_loader(args.loader_cases, rng)
    print(json.dumps({"loader": dict(sorted(load.items())), "kernels": dict(sorted(kern.items()))}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"loader": load, "kernels": kern}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("FASTLM_NUM_THREADS", "1")
    main()

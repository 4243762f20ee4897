"""Perplexity of a model over a text, and its distance from a reference model (mean KL divergence
and top-1 agreement of the next-token distributions), as llama.cpp's ``perplexity --kl-divergence``
reports them.

The text's tokens are cut into consecutive windows of ``ctx`` tokens; in each window every
position but the last predicts the next token. ``path="prefill"`` scores a window in one forward
pass (how prompts are processed); ``path="decode"`` feeds it token by token through the decode step
(how generated tokens are computed: for quantized models the activations are quantized there too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass
class Score:
    tokens: int           # predicted positions
    nll: float            # mean negative log-likelihood (nats)
    kl: float | None = None      # mean KL(reference || model)
    top1: float | None = None    # fraction of positions whose argmax agrees with the reference
    ref_nll: float | None = None

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll))

    @property
    def ref_perplexity(self) -> float | None:
        return None if self.ref_nll is None else float(np.exp(self.ref_nll))

    def as_dict(self) -> dict:
        d = {"tokens": self.tokens, "perplexity": self.perplexity, "nll": self.nll}
        if self.kl is not None:
            d.update(kl=self.kl, top1=self.top1, ref_perplexity=self.ref_perplexity,
                     perplexity_ratio=self.perplexity / self.ref_perplexity)
        return d


def log_softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def window_logits(engine, ids: list[int], path: str = "prefill") -> np.ndarray:
    """(len(ids), vocab) logits of one window from an empty cache."""
    return engine.logits(ids, path=path)


def windows(ids: list[int], ctx: int) -> Iterator[list[int]]:
    for s in range(0, len(ids) - 1, ctx):
        w = ids[s:s + ctx]
        if len(w) >= 2:
            yield w


def evaluate(engine, ids: list[int], ctx: int, reference=None, path: str = "prefill",
             progress=None) -> Score:
    """Scores the engine (and against a reference engine on the same tokens, if given)."""
    if ctx < 2:
        raise ValueError(f"ctx must be at least 2, got {ctx}")
    if ctx > engine.context_length:
        raise ValueError(f"ctx {ctx} exceeds the model's context ({engine.context_length})")
    nll, kl, agree, ref_nll, n = 0.0, 0.0, 0, 0.0, 0
    ws = list(windows(ids, ctx))
    if not ws:
        raise ValueError("the text has fewer than 2 tokens")
    for i, w in enumerate(ws):
        lp = log_softmax_rows(window_logits(engine, w, path)[:-1])
        target = np.asarray(w[1:])
        rows = np.arange(len(target))
        nll -= lp[rows, target].sum()
        if reference is not None:
            rp = log_softmax_rows(window_logits(reference, w, "prefill")[:-1])
            ref_nll -= rp[rows, target].sum()
            kl += (np.exp(rp) * (rp - lp)).sum()
            agree += int((rp.argmax(axis=1) == lp.argmax(axis=1)).sum())
        n += len(target)
        if progress:
            progress(i + 1, len(ws))
    if reference is None:
        return Score(n, nll / n)
    return Score(n, nll / n, kl / n, agree / n, ref_nll / n)

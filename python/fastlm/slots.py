"""The one owner of an executor's KV cache slots and of the token ids each slot holds.

Everything that runs the executor (the scheduler, and ``Engine.logits``, perplexity, ``fastlm bench``
through the scheduler's hold) goes through a Slots: it is the only caller of the executor's prefill / decode / truncate / copy,
so the token ids it keeps always describe what the cache holds, and a prompt that starts with
tokens already cached (the next turn of a chat) computes only its new suffix.

>>> slots = Slots(engine.model)                     # doctest: +SKIP
>>> slots.prefill(0, [1, 2, 3]).shape                # doctest: +SKIP
(49152,)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

CHUNK = 256  # the executor's prefill chunk (kChunk in csrc/runtime/model.cpp)
REUSE = ("exact", "all", "off")  # prefix reuse: whole prefill chunks only, every cached token, none


def prefix_mode(value: bool | str) -> str:
    """A prefix_cache setting as one of REUSE: True is "exact", False is "off"."""
    if value is True or value is False:
        return "exact" if value else "off"
    if isinstance(value, str) and value in REUSE:
        return value
    raise ValueError(f"prefix_cache must be True, False or one of {', '.join(map(repr, REUSE))}, got {value!r}")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


class Slots:
    """An executor's KV cache slots and the token ids whose keys and values each holds. One
    scheduler (fastlm.scheduler) drives them; direct use goes through its hold()."""

    def __init__(self, model):
        self.model = model
        self._tokens: list[list[int]] = []
        # per slot: its first positions computed by whole prefill chunks laid from position 0 (a
        # multiple of CHUNK): exactly what a prefill of any longer prompt with those tokens computes
        self._exact: list[int] = []

    # ---- what they hold ----
    def __len__(self) -> int:
        return len(self._tokens)

    def tokens(self, slot: int) -> tuple[int, ...]:
        return tuple(self._tokens[slot])

    def ensure(self, n: int) -> None:
        """At least n slots (each a KV cache of the model's context)."""
        self.model.ensure_slots(n)
        while len(self._tokens) < self.model.n_slots:
            self._tokens.append([])
            self._exact.append(0)
        for s, toks in enumerate(self._tokens):
            # they disagree when a step was cut off (Ctrl-C inside a prefill), or the executor was
            # driven around this owner (a test): the shorter is a prefix of the longer; keep it
            have = self.model.slot_len(s)
            if have != len(toks):
                keep = min(have, len(toks))
                self.truncate(s, keep)

    def reusable(self, slot: int, prompt: Sequence[int], reuse: str = "exact") -> int:
        """Tokens of prompt whose cached keys and values slot may lend it: "exact", those of its
        whole prefill chunks (then the result is the same bits as a cold prefill); "all", every
        cached token it starts with (computed in other chunks, or one by one by decode: the last
        bits may differ, and on quantized weights a greedy choice may flip); "off", none. At least
        the prompt's last token is always computed (its logits are needed)."""
        if reuse == "off":
            return 0
        n = min(common_prefix(self._tokens[slot], prompt), len(prompt) - 1)
        if reuse == "exact":
            n = min(n, self._exact[slot]) // CHUNK * CHUNK
        return n

    def plan(self, prompts: Sequence[Sequence[int]], n: int, free: Sequence[int],
             reuse: str = "exact") -> list[tuple[list[int], int]]:
        """For each prompt, (its slots: the one for its first sample, then the others, and the tokens
        of it reused from the first, see reusable()), taken from `free`: the slot that lends the
        most, copies where the least is lost."""
        if reuse not in REUSE:
            raise ValueError(f"reuse must be one of {', '.join(REUSE)}, got {reuse!r}")
        free = list(free)
        if len(free) < len(prompts) * n:
            raise ValueError(f"{len(prompts) * n} slots are needed, {len(free)} are free")
        out = []
        for p in prompts:
            best = max(free, key=lambda s: (self.reusable(s, p, reuse), common_prefix(self._tokens[s], p), -s))
            free.remove(best)
            free.sort(key=lambda s: (len(self._tokens[s]), s))
            copies, free = free[:n - 1], free[n - 1:]
            out.append(([best] + copies, self.reusable(best, p, reuse)))
        return out

    # ---- running the executor ----
    def truncate(self, slot: int, length: int) -> None:
        self.model.truncate_slot(slot, length)
        del self._tokens[slot][length:]
        self._exact[slot] = min(self._exact[slot], length // CHUNK * CHUNK)

    def reset(self) -> None:
        """Forgets every cached prompt."""
        for s in range(len(self._tokens)):
            self.truncate(s, 0)

    def prefill(self, slot: int, ids: Sequence[int], keep: int = 0, all_logits: bool = False) -> np.ndarray:
        """Keeps the first `keep` cached tokens of `slot` (they must be ids[:keep]) and computes the
        rest of ids after them; the logits of the last position (vocab,), or of every computed one
        (all_logits: (len(ids) - keep, vocab))."""
        self.truncate(slot, keep)
        aligned = keep % CHUNK == 0 and self._exact[slot] == keep  # chunks laid from 0: more exact ones
        logits = self.model.prefill(slot, np.asarray(ids[keep:], dtype=np.int32), all_logits=all_logits)
        self._tokens[slot].extend(int(t) for t in ids[keep:])
        if aligned:
            self._exact[slot] = len(ids) // CHUNK * CHUNK
        return logits if all_logits else logits[0]

    def copy(self, src: int, dst: int) -> None:
        """dst holds what src holds (n samples of one prompt share its prefill)."""
        self.model.copy_slot(src, dst, len(self._tokens[src]))
        self._tokens[dst] = list(self._tokens[src])
        self._exact[dst] = self._exact[src]

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        """One token for each of several slots in one forward step; logits (len(slots), vocab)."""
        logits = self.model.decode(np.asarray(slots, np.int64), np.asarray(tokens, np.int32))
        for s, t in zip(slots, tokens):
            self._tokens[s].append(int(t))
        return logits

    def logits(self, ids: Sequence[int], path: str = "prefill") -> np.ndarray:
        """(len(ids), vocab) logits of ids from an empty cache, in one forward pass ("prefill") or
        token by token through the decode step ("decode"); slot 0 is left empty."""
        if path not in ("prefill", "decode"):
            raise ValueError(f"path must be 'prefill' or 'decode', got {path!r}")
        self.ensure(1)
        self.truncate(0, 0)
        try:
            if path == "prefill":
                return self.prefill(0, ids, all_logits=True)
            out = np.empty((len(ids), self.model.vocab), np.float32)
            for i, t in enumerate(ids):
                out[i] = self.decode([0], [t])[0]
            return out
        finally:
            self.truncate(0, 0)

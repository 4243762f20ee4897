"""The one owner of an executor's KV cache slots and of the token ids each slot holds.

Everything that runs the executor (generation, ``Engine.logits``, perplexity, ``fastlm bench``)
goes through a Slots: it is the only caller of the executor's prefill / decode / truncate / copy,
so the token ids it keeps always describe what the cache holds, and a prompt that starts with
tokens already cached (the next turn of a chat) computes only its new suffix.

>>> slots = Slots(engine.model)                     # doctest: +SKIP
>>> slots.prefill(0, [1, 2, 3]).shape                # doctest: +SKIP
(49152,)
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


class _Hold:
    """The owner of a one-off use of the slots (Engine.logits, reset, bench)."""

    def __init__(self) -> None:
        self.done = False
        self.stale = False


class Slots:
    """An executor's KV cache slots and the token ids whose keys and values each holds.

    A user of the slots (one generation call, or a ``hold``) takes them with ``claim`` and gives
    them back with ``release``. Calls from other threads wait for it (calls on one Engine queue,
    never interleave); a new call from the user's own thread takes over, and the user it displaces
    is told (its ``stale`` becomes True) and must stop."""

    def __init__(self, model):
        self.model = model
        self._tokens: list[list[int]] = []
        self._owner = None
        self._owner_thread: int | None = None
        self._cond = threading.Condition()

    # ---- who drives them ----
    def _busy(self) -> bool:
        return self._owner is not None and not self._owner.done

    def claim(self, owner) -> None:
        """`owner` (an object with `done` and `stale`) drives the slots from now on."""
        me = threading.get_ident()
        with self._cond:
            while self._busy() and self._owner_thread != me:
                self._cond.wait()
            prev = self._owner
            if prev is not None and prev is not owner and self._busy():
                prev.stale = True  # the same thread started a new call: its open stream stops
            self._owner, self._owner_thread = owner, me

    def release(self, owner) -> None:
        """`owner` is finished with the slots (a no-op if another has taken them over since)."""
        with self._cond:
            if self._owner is owner:
                self._owner = self._owner_thread = None
                self._cond.notify_all()

    @contextmanager
    def hold(self) -> Iterator["Slots"]:
        """The slots for one block of calls, queued behind other threads' calls."""
        token = _Hold()
        self.claim(token)
        try:
            yield self
        finally:
            token.done = True
            self.release(token)

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
        for s, toks in enumerate(self._tokens):
            # they disagree when a step was cut off (Ctrl-C inside a prefill), or the executor was
            # driven around this owner (a test): the shorter is a prefix of the longer; keep it
            have = self.model.slot_len(s)
            if have != len(toks):
                keep = min(have, len(toks))
                self.model.truncate_slot(s, keep)
                del toks[keep:]

    def plan(self, prompts: Sequence[Sequence[int]], n: int = 1) -> list[tuple[int, int, list[int]]]:
        """For each prompt, (slot, tokens of it already cached there, slots for its other n - 1
        samples): the slot with the longest cached prefix, copies where the least is lost. At
        least the prompt's last token is always computed (its logits are needed)."""
        self.ensure(len(prompts) * n)
        free = list(range(len(self._tokens)))
        out = []
        for p in prompts:
            best = max(free, key=lambda s: (common_prefix(self._tokens[s], p), -s))
            free.remove(best)
            free.sort(key=lambda s: (len(self._tokens[s]), s))
            copies, free = free[:n - 1], free[n - 1:]
            out.append((best, min(common_prefix(self._tokens[best], p), len(p) - 1), copies))
        return out

    # ---- running the executor ----
    def truncate(self, slot: int, length: int) -> None:
        self.model.truncate_slot(slot, length)
        del self._tokens[slot][length:]

    def reset(self) -> None:
        """Forgets every cached prompt."""
        for s in range(len(self._tokens)):
            self.truncate(s, 0)

    def prefill(self, slot: int, ids: Sequence[int], keep: int = 0, all_logits: bool = False) -> np.ndarray:
        """Keeps the first `keep` cached tokens of `slot` (they must be ids[:keep]) and computes the
        rest of ids after them; the logits of the last position (vocab,), or of every computed one
        (all_logits: (len(ids) - keep, vocab))."""
        self.truncate(slot, keep)
        logits = self.model.prefill(slot, np.asarray(ids[keep:], dtype=np.int32), all_logits=all_logits)
        self._tokens[slot].extend(int(t) for t in ids[keep:])
        return logits if all_logits else logits[0]

    def copy(self, src: int, dst: int) -> None:
        """dst holds what src holds (n samples of one prompt share its prefill)."""
        self.model.copy_slot(src, dst, len(self._tokens[src]))
        self._tokens[dst] = list(self._tokens[src])

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

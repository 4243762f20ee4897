"""Structured output: generation constrained to a JSON schema, any JSON object, a regular
expression, a Lark or GBNF grammar, or a list of choices, with llguidance (the optional extra
``pip install "fastlm[structured]"``).

Each constrained sample holds an llguidance matcher. Before a token is chosen, the matcher's mask
of allowed tokens (one bit per token) is applied to the logits in C++
(``fastlm.kernels.apply_token_bitmask``); the chosen token is fed back to the matcher. The next
step's masks are computed on a worker thread while the model's forward step runs. A sample ends
when its grammar is complete and admits nothing more (finish_reason "stop").

>>> from fastlm import SamplingParams, StructuredOutput
>>> p = SamplingParams(structured={"type": "object", "properties": {"x": {"type": "integer"}}})
>>> p.structured.kind
'json'
>>> StructuredOutput(choice=["yes", "no"]).kind
'choice'
"""
from __future__ import annotations

import collections
import json
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

INSTALL_HINT = 'structured output needs llguidance: pip install "fastlm[structured]"'

# JSON as json.dumps writes it ({"a": 1, "b": [2, 3]}): no free-form whitespace, which a small
# model can emit without end; a schema's own "x-guidance" options override these
JSON_DEFAULTS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

KINDS = ("json", "json_object", "regex", "grammar", "choice")


class StructuredOutputError(ValueError):
    """A constraint that cannot be used: an invalid schema or grammar, a keyword llguidance does not
    implement, a grammar that matches nothing (the server answers HTTP 400)."""


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return llguidance


def _schema_of(value: Any) -> dict:
    """A JSON schema from a dict, its JSON text, or a pydantic model class."""
    if isinstance(value, dict):
        schema = value
    elif isinstance(value, str):
        try:
            schema = json.loads(value)
        except json.JSONDecodeError as e:
            raise StructuredOutputError(f"structured json: not valid JSON ({e})") from None
    elif isinstance(value, type) and hasattr(value, "model_json_schema"):  # a pydantic model class
        schema = _closed(value.model_json_schema())
    else:
        raise TypeError(f"structured json must be a JSON schema (a dict or its JSON text) or a pydantic model class, "
                        f"got {type(value).__name__}")
    if not isinstance(schema, dict):
        raise StructuredOutputError(f"structured json: a JSON schema is an object, got {type(schema).__name__}")
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as e:
        raise StructuredOutputError(f"structured json: the schema is not JSON-serializable ({e})") from None
    return schema


def _closed(schema):
    """A pydantic model's schema with no properties beyond its fields (additionalProperties false
    where it says nothing), as the openai SDK's strict schemas have it: pydantic ignores extra
    keys, so generating them would only spend tokens (and a small model may never stop)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@dataclass(frozen=True)
class StructuredOutput:
    """What a sample's text must be; exactly one of (vLLM's names):

    json: a JSON schema (dict, JSON text, or a pydantic model class, whose objects are closed to
    keys beyond its fields); the output is JSON valid under it. json_object: True for any JSON object. regex: a regular expression the whole output
    matches (Rust regex syntax). grammar: a Lark grammar (llguidance's dialect, ``start:`` rule) or a
    GBNF grammar (llama.cpp's, ``root ::=``). choice: one of these strings, exactly.

    Unsupported schema keywords are errors, never ignored. JSON is written compactly, as json.dumps
    writes it; a schema's ``"x-guidance"`` object sets llguidance's JSON options
    (e.g. ``{"whitespace_flexible": true}``)."""

    json: Any = field(default=None, hash=False)
    json_object: bool = False
    regex: str | None = None
    grammar: str | None = None
    choice: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        given = [k for k in KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError(f"StructuredOutput takes exactly one of {', '.join(KINDS)}; got "
                             f"{', '.join(given) if given else 'none'}")
        set_ = object.__setattr__
        if self.json is not None:
            set_(self, "json", _schema_of(self.json))
        if not isinstance(self.json_object, bool):
            raise TypeError(f"json_object must be a bool, got {self.json_object!r}")
        for name in ("regex", "grammar"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, str) and v):
                raise TypeError(f"structured {name} must be a non-empty str, got {v!r}")
        if self.choice is not None:
            ch = self.choice
            if isinstance(ch, str) or not isinstance(ch, (list, tuple)) or not ch or \
                    not all(isinstance(c, str) and c for c in ch):
                raise TypeError(f"structured choice must be a non-empty list of non-empty str, got {ch!r}")
            set_(self, "choice", tuple(ch))

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) not in (None, False))

    @classmethod
    def of(cls, value: Any) -> "StructuredOutput | None":
        """SamplingParams.structured's forms: a StructuredOutput, a JSON schema (dict), a pydantic
        model class, "json_object" (or "json"), or None."""
        if value is None or isinstance(value, StructuredOutput):
            return value
        if isinstance(value, str):
            if value in ("json_object", "json"):
                return cls(json_object=True)
            raise ValueError(f"structured as a str must be 'json_object'; pass StructuredOutput(regex=...) or "
                             f"StructuredOutput(grammar=...) for a pattern, got {value!r}")
        if isinstance(value, dict) or (isinstance(value, type) and hasattr(value, "model_json_schema")):
            return cls(json=value)
        raise TypeError(f"structured must be a StructuredOutput, a JSON schema dict, a pydantic model class or "
                        f"'json_object', got {type(value).__name__}")

    def grammar_text(self) -> str:
        """The llguidance grammar for it."""
        llg = _llguidance()
        M = llg.LLMatcher
        kind = self.kind
        try:
            if kind == "json":
                return M.grammar_from_json_schema(self.json, defaults=JSON_DEFAULTS)
            if kind == "json_object":
                return M.grammar_from_json_schema({"type": "object"}, defaults=JSON_DEFAULTS)
            if kind == "regex":
                return M.grammar_from_regex(self.regex)
            if kind == "choice":
                return M.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in self.choice))
            lark = self.grammar
            if "::=" in lark:  # GBNF, read as llguidance's converter writes it in Lark
                from llguidance.gbnf_to_lark import any_to_lark
                lark = any_to_lark(lark)
        except ValueError as e:
            raise StructuredOutputError(f"structured {kind}: {e}") from None
        except Exception as e:  # the converter raises its own error types for GBNF it cannot read
            raise StructuredOutputError(f"structured grammar: not a GBNF grammar llguidance reads ({e})") from None
        rule = never_finishes(lark)
        if rule is not None:
            raise StructuredOutputError(f"structured grammar: the grammar matches no text: every way through "
                                        f"'{rule}' leads back into a rule that never finishes")
        return M.grammar_from_lark(lark)


# ---- a grammar that can never finish ----
_LEX = re.compile(r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"i?)
  | (?P<re>/(?:[^/\\\n]|\\.)+/[imslux]*)
  | (?P<special><[^<>\s]+>)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<range>[0-9]+(?:\.\.[0-9]+)?)
  | (?P<op>[|()\[\]?*+~,{}=.@-])
""", re.X)


def _lark_items(body: str) -> list[tuple[str, str]] | None:
    """(kind, text) tokens of a rule's body; None for anything this reading does not follow."""
    out, i = [], 0
    while i < len(body):
        if body.startswith("%json", i):  # an embedded JSON schema: one item
            j = i + 5
            while j < len(body) and body[j].isspace():
                j += 1
            try:
                _, i = json.JSONDecoder().raw_decode(body, j)
            except json.JSONDecodeError:
                return None
            out.append(("str", "%json"))
            continue
        m = _LEX.match(body, i)
        if m is None:
            return None
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
        i = m.end()
    return out


def _finishes(items: list, done: set) -> bool | None:
    """Whether the expansion can produce a finite text, given the rules known to (done); None if
    the expansion is not read."""
    pos = 0

    def alts() -> bool:
        nonlocal pos
        ok = seq()
        while pos < len(items) and items[pos][1] == "|":
            pos += 1
            ok = seq() or ok
        return ok

    def seq() -> bool:
        nonlocal pos
        ok = True
        while pos < len(items) and items[pos][1] not in ("|", ")", "]"):
            ok = item() and ok
        return ok

    def item() -> bool:
        nonlocal pos
        kind, text = items[pos]
        pos += 1
        if text == "(":
            ok = alts()
            pos += 1  # ")"
        elif text == "[":
            alts()
            pos += 1  # "]"
            ok = True
        elif kind == "name":
            ok = text in done
        elif kind in ("str", "re", "special", "range"):
            ok = True
        else:
            raise ValueError(text)
        while pos < len(items):  # postfix repetition
            t = items[pos][1]
            if t in ("?", "*"):
                ok, pos = True, pos + 1
            elif t == "+":
                pos += 1
            elif t == "~":
                lo = items[pos + 1][1].split("..")[0]
                ok, pos = ok or lo == "0", pos + 2
            elif t == "{":
                k = pos + 1
                lo = items[k][1] if items[k][0] == "range" else "0"
                while items[k][1] != "}":
                    k += 1
                ok, pos = ok or lo == "0", k + 1
            else:
                break
        return ok

    try:
        ok = alts()
    except (ValueError, IndexError):
        return None
    return ok if pos == len(items) else None


def never_finishes(lark: str) -> str | None:
    """The start rule's name when no text can complete the grammar (every way through it refers
    back to itself, as in ``start: "a" start``), else None. Grammar syntax that this reading does
    not follow (llguidance checks the syntax itself) is not judged."""
    rules: dict[str, list] = {}
    name = None
    for line in lark.splitlines():
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.-?[0-9]+)?\s*:(?!:)(.*)", line)
        if m and not line[:1].isspace():
            name = m.group(1)
            rules[name] = [m.group(2)]
        elif line.lstrip().startswith("%"):
            name = None  # a directive (%ignore, %import, %llguidance {...})
        elif name is not None:
            rules[name].append(line)
    if "start" not in rules:
        return None
    bodies = {}
    for n, parts in rules.items():
        items = _lark_items("\n".join(parts))
        if items is None:
            return None
        bodies[n] = items
    done: set[str] = set()
    while True:
        grew = False
        for n, items in bodies.items():
            if n in done:
                continue
            ok = _finishes(items, done)
            if ok is None:
                return None
            if ok:
                done.add(n)
                grew = True
        if not grew:
            break
    return None if "start" in done else "start"


class Compiler:
    """One Engine's llguidance tokenizer (built once, ~1 s for a 50K vocabulary) and its checked
    grammars (the last CACHE, by text). Thread-safe."""

    CACHE = 256

    def __init__(self, tokenizer, vocab: int, eos_token_ids: Sequence[int]):
        self._tokenizer = tokenizer
        self.vocab = vocab
        self.eos_token_ids = list(eos_token_ids)
        self._ll = None
        self._lock = threading.Lock()
        self._checked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def ll_tokenizer(self):
        with self._lock:
            if self._ll is None:
                llg = _llguidance()
                if self._tokenizer is None:
                    raise ValueError("structured output needs the model's tokenizer; this model has none")
                if not self.eos_token_ids:
                    raise ValueError("structured output needs an end-of-sequence token; this model names none")
                n = self._tokenizer.vocab_size
                if n > self.vocab:
                    raise ValueError(f"the tokenizer has {n} tokens, more than the model's {self.vocab} logits")
                self._ll = llg.LLTokenizer(self._tokenizer.backend.to_str(), n_vocab=self.vocab,
                                           eos_token=self.eos_token_ids)
            return self._ll

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The worker that computes masks while the forward step runs."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="fastlm-masks")
            return self._pool

    def matcher(self, spec: StructuredOutput):
        """A fresh matcher for spec, its grammar checked (StructuredOutputError names what is wrong)."""
        llg = _llguidance()
        tok = self.ll_tokenizer
        text = spec.grammar_text()
        with self._lock:
            known = text in self._checked
            if known:
                self._checked.move_to_end(text)
        if not known:
            is_error, msgs = llg.LLMatcher.validate_grammar_with_warnings(text, tok)
            if is_error:
                raise StructuredOutputError(f"structured {spec.kind}: {msgs[0] if msgs else 'invalid grammar'}")
            if msgs:  # warnings: something in the schema or grammar would not be enforced
                raise StructuredOutputError(f"structured {spec.kind}: {'; '.join(msgs)}")
        m = llg.LLMatcher(tok, text, log_level=0)
        if m.is_error():
            raise StructuredOutputError(f"structured {spec.kind}: {m.get_error()}")
        if not known:
            mask = np.frombuffer(m.compute_bitmask(), dtype=np.uint32)
            if m.is_error() or (not mask.any() and not m.is_accepting()):
                raise StructuredOutputError(f"structured {spec.kind}: the grammar matches no text"
                                            + (f" ({m.get_error()})" if m.is_error() else ""))
            m.reset()
            with self._lock:
                self._checked[text] = None
                while len(self._checked) > self.CACHE:
                    self._checked.popitem(last=False)
        return m


class Constraint:
    """One call's grammar: a matcher per constrained sample (copies of one checked matcher) and
    their masks, one row per sample."""

    def __init__(self, compiler: Compiler, matcher):
        self.compiler = compiler
        self.proto = matcher  # copied for each sample, never advanced
        self.words = (compiler.vocab + 31) // 32
        # every sample's first mask is the fresh matcher's: computed on the worker during prefill
        self._first = compiler.pool.submit(self.masks, [matcher.deep_copy()])
        self._pending: tuple[tuple[int, ...], Future] | None = None

    def for_sample(self):
        return self.proto.deep_copy()

    def masks(self, matchers: list) -> np.ndarray:
        """(len(matchers), words) int32: each matcher's allowed tokens now (llguidance writes them
        straight into the array, with the GIL released)."""
        out = np.empty((len(matchers), self.words), dtype=np.int32)
        ptr, row = out.ctypes.data, self.words * 4
        if len(matchers) == 1:
            matchers[0].unsafe_compute_mask_ptr(ptr, row)
        else:
            _executor().unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], ptr, row, len(matchers))
        return out

    def first_masks(self, n: int) -> np.ndarray:
        return np.repeat(self._first.result(), n, axis=0)

    def prepare(self, matchers: list) -> None:
        """Starts computing the masks of matchers on the worker (while the forward step runs)."""
        self._pending = (tuple(map(id, matchers)), self.compiler.pool.submit(self.masks, list(matchers)))

    def take(self, matchers: list) -> np.ndarray:
        """The masks prepare() started for these same matchers, or computed now."""
        pending, self._pending = self._pending, None
        if pending is not None:
            key, fut = pending
            out = fut.result()  # waited for even when unused: the worker must be done with the matchers
            if key == tuple(map(id, matchers)):
                return out
        return self.masks(matchers)


_EXECUTOR = None
_EXECUTOR_LOCK = threading.Lock()


def _executor():
    """llguidance's parallel mask executor, one per process."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = _llguidance().LLExecutor()
        return _EXECUTOR

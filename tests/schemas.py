"""JSON schemas of varied shape, drawn from a seeded generator: nested objects, arrays with
minItems / maxItems, enums, numbers (in quarters) and integers with bounds, string patterns and
lengths, optional fields, anyOf, const, booleans and nulls. Every value is bounded in length, so
every output can end within max_tokens. Shared by tests/test_structured.py and
benchmarks/structured.py.

>>> len(schemas(5, seed=0))
5
"""
from __future__ import annotations

import random

WORDS = ["name", "age", "city", "tags", "score", "items", "kind", "id", "price", "color", "size",
         "owner", "title", "count", "level", "active", "email", "notes", "rank", "unit"]
PATTERNS = [r"^[A-Z][a-z]{2,8}$", r"^[0-9]{3}-[0-9]{4}$", r"^[a-z]{1,8}(-[a-z]{1,8}){0,2}$", r"^#[0-9a-f]{6}$"]
ENUMS = [["red", "green", "blue"], ["small", "medium", "large"], ["cat", "dog"], [1, 2, 3], ["yes", "no", None]]


def _leaf(r: random.Random) -> dict:
    k = r.randrange(9)
    if k == 0:
        return {"type": "string", "maxLength": r.randint(3, 24)}
    if k == 1:
        return {"type": "string", "pattern": r.choice(PATTERNS)}
    if k == 2:
        return {"type": "string", "minLength": 1, "maxLength": r.randint(2, 12)}
    if k == 3:
        lo = r.randint(-50, 50)
        return {"type": "integer", "minimum": lo, "maximum": lo + r.randint(0, 500)}
    if k == 4:
        lo = r.uniform(-10, 10)
        # in quarters (exact in binary, so jsonschema checks it without rounding error): a bare number has no bound on its digits, which a small model sampling at
        # 0.7 can run on with until max_tokens (llguidance's JSON numbers have no digit cap)
        return {"type": "number", "minimum": round(lo, 2), "maximum": round(lo + r.uniform(0.5, 100), 2),
                "multipleOf": 0.25}
    if k == 5:
        return {"enum": r.choice(ENUMS)}
    if k == 6:
        return {"type": "boolean"}
    if k == 7:
        return {"const": r.choice(["v1", 42, True])}
    return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "string", "maxLength": 6},
                      {"type": "null"}]}


def _node(r: random.Random, depth: int) -> dict:
    k = r.randrange(10)
    if depth <= 0 or k < 5:
        return _leaf(r)
    if k < 8:
        return _object(r, depth - 1)
    lo = r.randint(0, 2)
    return {"type": "array", "items": _node(r, depth - 1), "minItems": lo, "maxItems": lo + r.randint(1, 3)}


def _object(r: random.Random, depth: int) -> dict:
    keys = r.sample(WORDS, r.randint(1, 4))
    props = {k: _node(r, depth) for k in keys}
    required = [k for k in keys if r.random() < 0.7]  # the others are optional
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def schemas(n: int, seed: int = 0) -> list[dict]:
    """n schemas, each an object at the top (as an app's form or function arguments are)."""
    r = random.Random(seed)
    return [_object(r, r.randint(0, 3)) for _ in range(n)]

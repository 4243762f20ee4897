"""Chat templates: the model's own Jinja template (tokenizer_config.json, chat_template.jinja or
GGUF metadata), rendered as transformers' apply_chat_template renders it.

The environment is the one transformers builds: a sandbox (templates come from model files,
untrusted), trim_blocks and lstrip_blocks, the loopcontrols extension ({% break %}, {% continue
%}), the {% generation %} tag, tojson without HTML escaping and with non-ASCII kept, and the
globals raise_exception, strftime_now, dict and a namespace that refuses underscore names. What a
template sees is rebuilt from plain JSON types first, so no caller object's methods reach it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from datetime import datetime

# names a message's reasoning arrives under; templates read the first (Qwen3's reasoning_content)
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.nodes
        import jinja2.sandbox
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        raise RuntimeError("chat templates need jinja2 (pip install jinja2)") from None
    return jinja2


@functools.lru_cache(maxsize=32)
def compile_template(template: str):
    """The template compiled in transformers' chat-template environment (cached by its text)."""
    jinja2 = _jinja()

    class Generation(jinja2.ext.Extension):
        # {% generation %}...{% endgeneration %} marks the assistant's part (transformers uses it
        # for training masks): rendered as its body
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        # namespace(...) in a template, refusing underscore names (no way to CPython internals)
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}")

    class Dict:
        # dict(...) in a template, without the dict type itself (no type hackery)
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, dict=Dict(), namespace=Namespace)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"the chat template does not parse: {e} (line {e.lineno})") from None


def plain(value, where: str = "the template's input"):
    """value rebuilt from JSON types (str, int, float, bool, None, dict, list; tuples stay
    tuples; dataclasses and pydantic models become dicts); anything else is refused, naming it."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain(k, where): plain(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, where) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v, where) for v in value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return plain(value.item(), where)  # a NumPy scalar
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), where) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return plain(value.model_dump(), where)
    raise TypeError(f"{where} holds a {type(value).__name__}, which a chat template cannot take "
                    "(give str, numbers, bools, None, dicts and lists)")


def _messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, Mapping) and "role" in m for m in messages):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for m in plain(list(messages), "messages"):
        reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:  # every name a template may read it under
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


def select(template: str | dict, tools: list | None) -> str:
    """One template out of a model's: a string, or named ones (tokenizer_config.json's list form):
    "tool_use" when tools are given and it exists, else "default"."""
    if isinstance(template, str):
        return template
    if tools and "tool_use" in template:
        return template["tool_use"]
    if "default" in template:
        return template["default"]
    raise ValueError(f"the model's chat templates are named {', '.join(sorted(template))}, none 'default'")


def render(template: str | dict, messages: list[dict], add_generation_prompt: bool = True, *,
           tools: list | None = None, documents: list | None = None, **extra) -> str:
    """The template applied to messages as transformers applies it: tools (JSON schemas, as
    dicts), documents ({"title", "text"} dicts) and any other keyword (enable_thinking, bos_token,
    ...) reach the template as variables."""
    jinja2 = _jinja()
    if tools is not None:
        if not isinstance(tools, (list, tuple)) or not all(isinstance(t, Mapping) for t in tools):
            raise TypeError("tools must be a list of JSON schemas (dicts), e.g. {'type': 'function', "
                            "'function': {'name': ..., 'parameters': {...}}}")
        tools = plain(list(tools), "tools")
    if documents is not None:
        if not isinstance(documents, (list, tuple)) or not all(isinstance(d, Mapping) for d in documents):
            raise TypeError("documents must be a list of dicts with 'title' and 'text'")
        documents = plain(list(documents), "documents")
    compiled = compile_template(select(template, tools))
    try:
        return compiled.render(messages=_messages(messages), tools=tools, documents=documents,
                               add_generation_prompt=bool(add_generation_prompt), **plain(extra, "the template's variables"))
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"the chat template failed: {e}") from None

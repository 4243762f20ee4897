"""Tool calls: tools reach the model through its own chat template, the model's tool-call text is
parsed into OpenAI ``tool_calls``, and ``tool_choice="required"`` or a named function constrains
the output (with llguidance, fastlm.structured) so the arguments always follow the function's
JSON schema.

The format is chosen from the template: "hermes" (Qwen2.5 / Qwen3 / Hermes / SmolLM3:
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``), "llama3" (Llama 3.1 / 3.2: a JSON
object ``{"name": ..., "parameters": {...}}``, after ``<|python_tag|>`` or alone), "mistral"
(``[TOOL_CALLS][{"name": ..., "arguments": {...}}]``). A template that never mentions tools
(SmolLM2's) gets them from fastlm as a system prompt in the hermes format.

>>> fmt = format_of("{% for t in tools %}...{% endfor %}<tool_call>")
>>> fmt
'hermes'
>>> content, calls = parse(fmt, 'Sure.<tool_call>\\n{"name": "f", "arguments": {"x": 1}}\\n</tool_call>')
>>> content, calls[0].name, calls[0].arguments
('Sure.', 'f', '{"x": 1}')
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from fastlm.structured import JSON_DEFAULTS, StructuredOutput

FORMATS = ("hermes", "llama3", "mistral")
CHOICES = ("auto", "none", "required")
# where a call begins, per format: text from here on is held back from a stream until it is
# known to be (or not be) a call
OPENERS = {"hermes": "<tool_call>", "llama3": "<|python_tag|>", "mistral": "[TOOL_CALLS]"}


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: arguments are JSON text, as OpenAI returns them."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def format_of(template: str | None) -> str:
    """The tool-call format a chat template teaches its model."""
    t = template or ""
    if "[TOOL_CALLS]" in t:
        return "mistral"
    if "<tool_call>" in t:
        return "hermes"
    if "<|python_tag|>" in t or ("<|eot_id|>" in t and "tools" in t):
        return "llama3"
    return "hermes"


def renders_tools(template: str | None) -> bool:
    """Whether the template itself puts `tools` into the prompt."""
    return bool(template) and re.search(r"\btools\b", template) is not None


# ---- checking what the caller passes ----
def check_tools(tools) -> list[dict]:
    """OpenAI's tools: [{"type": "function", "function": {"name", "description"?, "parameters"?}}];
    a bare function dict (no "type") is taken as a function too."""
    if not isinstance(tools, (list, tuple)) or not tools:
        raise ValueError("tools must be a non-empty list of {'type': 'function', 'function': {...}}")
    out, names = [], set()
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise TypeError(f"tools[{i}] must be a dict, got {type(t).__name__}")
        if "type" in t and t["type"] != "function":
            raise ValueError(f"tools[{i}].type must be 'function', got {t['type']!r}")
        fn = t.get("function", t if "type" not in t else None)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"tools[{i}].function must be a dict with a non-empty 'name'")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", fn["name"]):
            raise ValueError(f"tools[{i}].function.name {fn['name']!r} must be 1-64 letters, digits, _ . or -")
        if fn["name"] in names:
            raise ValueError(f"tools[{i}]: the function name {fn['name']!r} appears twice")
        names.add(fn["name"])
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema (a dict)")
        if "description" in fn and not isinstance(fn["description"], str):
            raise ValueError(f"tools[{i}].function.description must be a str")
        out.append({"type": "function", "function": {**fn, "parameters": params}})
    return out


def check_choice(tool_choice, tools: list[dict] | None) -> tuple[str, str | None]:
    """(mode, the one function's name or None): "auto" / "none" / "required" / a named function
    ({"type": "function", "function": {"name": ...}})."""
    if tool_choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(tool_choice, str):
        if tool_choice not in CHOICES:
            raise ValueError(f"tool_choice must be one of {', '.join(CHOICES)} or a named function, got {tool_choice!r}")
        if tool_choice != "none" and not tools:
            raise ValueError(f"tool_choice={tool_choice!r} needs tools")
        return tool_choice, None
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if tool_choice.get("type") != "function" or not isinstance(name, str):
            raise ValueError("tool_choice as a dict must be {'type': 'function', 'function': {'name': ...}}")
        known = [t["function"]["name"] for t in tools or []]
        if name not in known:
            raise ValueError(f"tool_choice names the function {name!r}, which is not among the tools "
                             f"({', '.join(known) or 'none given'})")
        return "required", name
    raise TypeError(f"tool_choice must be a str or a dict, got {type(tool_choice).__name__}")


# ---- the prompt ----
def system_prompt(tools: list[dict]) -> str:
    """The tools as a system prompt in the hermes format, for a template that does not render them."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            f"{lines}\n</tools>\n\nFor each function call, return a json object with function name and arguments "
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def messages_for_template(messages: list[dict], tools: list[dict] | None, template: str | None) -> list[dict]:
    """The conversation as the template takes it: an assistant turn's tool_calls with arguments as
    objects (templates write them with tojson; OpenAI sends JSON text). For a template that does not
    render tools, fastlm writes them in: the tools into the system prompt, earlier calls and their
    results as hermes text."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                c = json.loads(json.dumps(c))
                fn = c.get("function", c)
                if isinstance(fn.get("arguments"), str):
                    try:
                        fn["arguments"] = json.loads(fn["arguments"])
                    except json.JSONDecodeError:
                        raise ValueError(f"a tool call's arguments are not valid JSON: {fn['arguments'][:200]!r}") from None
                calls.append(c)
            m["tool_calls"] = calls
        out.append(m)
    if renders_tools(template) or not (tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in out)):
        return out
    plain = []
    for m in out:
        if m.get("tool_calls"):
            text = (m.get("content") or "") + "".join(
                "<tool_call>\n" + json.dumps({"name": c.get("function", c)["name"],
                                              "arguments": c.get("function", c).get("arguments", {})},
                                             ensure_ascii=False) + "\n</tool_call>" for c in m["tool_calls"])
            plain.append({"role": "assistant", "content": text})
        elif m.get("role") == "tool":
            plain.append({"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"})
        else:
            plain.append(m)
    if tools:
        prompt = system_prompt(tools)
        if plain and plain[0].get("role") == "system":
            plain[0] = {**plain[0], "content": (plain[0].get("content") or "") + "\n\n" + prompt}
        else:
            plain.insert(0, {"role": "system", "content": prompt})
    return plain


# ---- constraining the output ----
def _call_schema(tools: list[dict], name: str | None, args_key: str) -> dict:
    """One call to any of the tools (or to the named one) as a JSON schema."""
    options = []
    for t in tools:
        fn = t["function"]
        if name is not None and fn["name"] != name:
            continue
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]}, args_key: fn["parameters"]},
                        "required": ["name", args_key], "additionalProperties": False})
    return options[0] if len(options) == 1 else {"anyOf": options}


def constraint(fmt: str, tools: list[dict], name: str | None, parallel: bool = True) -> StructuredOutput:
    """The output of tool_choice="required" (or a named function) as a grammar: one call, or one or
    more when parallel, in the format's own text."""
    if fmt == "mistral":
        schema = {"type": "array", "items": _call_schema(tools, name, "arguments"), "minItems": 1}
        if not parallel:
            schema["maxItems"] = 1
        schema["x-guidance"] = JSON_DEFAULTS
        return StructuredOutput(grammar=f'start: "[TOOL_CALLS]" calls\ncalls: %json {json.dumps(schema)}')
    key = "parameters" if fmt == "llama3" else "arguments"
    schema = {**_call_schema(tools, name, key), "x-guidance": JSON_DEFAULTS}
    if fmt == "llama3":
        more = '(";" call)*' if parallel else ""
        return StructuredOutput(grammar=f"start: call {more}\ncall: %json {json.dumps(schema)}")
    more = '("\\n" call)*' if parallel else ""
    return StructuredOutput(grammar=f'start: call {more}\ncall: "<tool_call>\\n" obj "\\n</tool_call>"\n'
                                    f"obj: %json {json.dumps(schema)}")


# ---- parsing the output ----
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def _call_from(obj, args_keys=("arguments", "parameters")) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = next((obj[k] for k in args_keys if k in obj), {})
    if isinstance(args, str):  # some models write the arguments as JSON text
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False))


def _json_values(text: str) -> list | None:
    """Every JSON value in text, one after another (separated by whitespace or ';'), or None if
    anything else is there."""
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i] in " \t\r\n;":
            i += 1
        if i == len(text):
            return out
        try:
            v, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return None
        out.append(v)


def parse(fmt: str, text: str, tools: list[dict] | None = None) -> tuple[str, list[ToolCall]]:
    """(the content before any call, the calls) from a model's output in format fmt. Text that is
    not a well-formed call (invalid JSON, a function not among the tools) stays content: nothing is
    dropped or guessed."""
    known = None if tools is None else {t["function"]["name"] for t in tools}

    def ok(c: ToolCall | None) -> bool:
        return c is not None and (known is None or c.name in known)

    if fmt == "hermes":
        start = text.find("<tool_call>")
        if start < 0:
            return text, []
        calls = []
        for m in _HERMES.finditer(text, start):
            closed = m.group(0).rstrip().endswith("</tool_call>")
            try:
                c = _call_from(json.loads(m.group(1)))
            except json.JSONDecodeError:
                c = None
            if not ok(c):
                if closed or not calls:
                    return text, []
                break  # an unclosed last call cut short (max_tokens): the closed ones stand
            calls.append(c)
        return text[:start].strip(), calls
    if fmt == "mistral":
        start = text.find("[TOOL_CALLS]")
        if start < 0:
            return text, []
        body = text[start + len("[TOOL_CALLS]"):].strip()
        calls = []
        values = _json_values(body)
        if values is not None and len(values) == 1 and isinstance(values[0], list):
            calls = [_call_from(v) for v in values[0]]
        else:  # the newer form: name[ARGS]{...}, repeated
            for m in re.finditer(r"([A-Za-z0-9_.\-]+)\[ARGS\]", body):
                try:
                    args, _ = json.JSONDecoder().raw_decode(body, m.end())
                except json.JSONDecodeError:
                    return text, []
                calls.append(_call_from({"name": m.group(1), "arguments": args}))
        if not calls or not all(ok(c) for c in calls):
            return text, []
        return text[:start].strip(), calls
    if fmt == "llama3":
        body = text.strip()
        if body.startswith("<|python_tag|>"):
            body = body[len("<|python_tag|>"):]
        values = _json_values(body)
        if not values:
            return text, []
        calls = [_call_from(v) for v in values]
        if not all(ok(c) for c in calls):
            return text, []
        return "", calls
    raise ValueError(f"unknown tool-call format {fmt!r} (known: {', '.join(FORMATS)})")


def may_open(fmt: str, text: str) -> int:
    """Where in text a call may begin (its opener, or a tail that could still become one), or -1:
    a stream holds back from there. Llama 3's calls are a bare JSON object: one may begin only
    where the whole text does (after whitespace)."""
    if fmt == "llama3":
        s = text.lstrip()
        tag = OPENERS["llama3"]
        return len(text) - len(s) if (not s or s[0] == "{" or tag.startswith(s[:len(tag)]) or s.startswith(tag)) else -1
    opener = OPENERS[fmt]
    i = text.find(opener)
    if i >= 0:
        return i
    for k in range(min(len(opener) - 1, len(text)), 0, -1):
        if opener.startswith(text[-k:]):
            return len(text) - k
    return -1


class CallFilter:
    """One sample's text on its way out while tools may be called: content is released as it
    comes, text from where a call may begin is held, and at the end the calls are parsed (held
    text that is no call is released then)."""

    def __init__(self, fmt: str, tools: list[dict]):
        self.fmt, self.tools = fmt, tools
        self.text = ""
        self.sent = 0
        self.calls: list[ToolCall] = []
        self.content: str | None = None  # set by finish()

    def feed(self, delta: str) -> str:
        self.text += delta
        if self.fmt == "llama3":
            i = may_open(self.fmt, self.text)
            hold = len(self.text) if i < 0 else i
            hold = max(hold, self.sent)
        else:
            i = may_open(self.fmt, self.text[self.sent:])
            hold = len(self.text) if i < 0 else self.sent + i
        out = self.text[self.sent:hold]
        self.sent = hold
        return out

    def finish(self) -> str:
        """The text still to release; calls and content are set."""
        content, self.calls = parse(self.fmt, self.text, self.tools)
        if not self.calls:
            self.content = self.text
            out = self.text[self.sent:]
        else:
            self.content = content
            out = content[self.sent:] if len(content) > self.sent else ""
        self.sent = len(self.text)
        return out

"""The OpenAI wire format: request bodies read into fastlm's own types (SamplingParams, prompts,
messages), results and stream chunks written as OpenAI writes them, errors in its error shape.

No web framework here: the app (fastlm.server.app) hands this module parsed JSON and gets dicts
back, so the mapping is testable on its own.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field

from fastlm import tool_calls
from fastlm.outputs import Chunk, Completion, openai_chat_logprob, openai_reason, openai_usage
from fastlm.sampling import SamplingParams
from fastlm.structured import StructuredOutput

# fields a request may carry that change nothing here (bookkeeping for the caller or OpenAI's
# platform); anything else this server does not implement is refused, naming it
IGNORED = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
# fields of OpenAI's API not implemented here: a request setting one is refused, not half-served
UNSUPPORTED = {
    "tools": "tools are supported by /v1/chat/completions",
    "tool_choice": "tools are supported by /v1/chat/completions",
    "parallel_tool_calls": "tools are supported by /v1/chat/completions",
    "functions": "function calls are not supported",
    "function_call": "function calls are not supported",
    "audio": "audio output is not supported", "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "reasoning_effort is not supported", "verbosity": "verbosity is not supported",
    "web_search_options": "web search is not supported",
    "suffix": "suffix (insertion) is not supported", "echo": "echo is not supported",
}


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# ---- reading requests ----
def _check_type(body: dict, name: str, kinds: tuple, what: str):
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) and bool not in kinds:
        raise bad(f"'{name}' must be {what}, got {v!r}", name)
    if not isinstance(v, kinds):
        raise bad(f"'{name}' must be {what}, got {type(v).__name__} {v!r}"[:300], name)
    return v


_INT, _NUM, _STR, _BOOL = (int,), (int, float), (str,), (bool,)


@dataclass
class Request:
    """One /v1/completions or /v1/chat/completions request, read and checked."""

    model: str
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    prompts: list | None = None     # completions: each a str or a list of token ids
    messages: list | None = None    # chat: the conversation
    chat: bool = False
    fields: frozenset = frozenset()  # the body's field names
    tools: list | None = None       # chat: the function tools, checked
    tool_choice: object = None
    parallel_tool_calls: bool = True
    id: str = field(default_factory=lambda: "cmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))


def _common(body: object, chat: bool, known: set) -> tuple[dict, str]:
    if not isinstance(body, dict):
        raise bad(f"the request body must be a JSON object, got {type(body).__name__}")
    for name, v in body.items():
        if name in known or name in IGNORED:
            continue
        if name in UNSUPPORTED:
            if v is None or v == [] or (name == "echo" and v is False):
                continue
            raise bad(f"'{name}': {UNSUPPORTED[name]}", name, "unsupported_parameter")
        raise bad(f"unrecognized request argument supplied: '{name}'", name, "unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required (a string: GET /v1/models lists it)", "model")
    return body, model


_SAMPLING = {"temperature": (_NUM, "a number"), "top_p": (_NUM, "a number"), "n": (_INT, "an integer"),
             "seed": (_INT, "an integer"), "presence_penalty": (_NUM, "a number"),
             "frequency_penalty": (_NUM, "a number"), "top_k": (_INT, "an integer"), "min_p": (_NUM, "a number"),
             "repetition_penalty": (_NUM, "a number"), "min_tokens": (_INT, "an integer"),
             "ignore_eos": (_BOOL, "a boolean"), "max_tokens": (_INT, "an integer"),
             "max_completion_tokens": (_INT, "an integer"), "stream": (_BOOL, "a boolean"),
             "logit_bias": ((dict,), "an object {token id: bias}"), "stop_token_ids": ((list,), "a list of token ids"),
             "stream_options": ((dict,), "an object"), "best_of": (_INT, "an integer")}
_KNOWN_BOTH = set(_SAMPLING) | {"model", "stop", "response_format", "structured_outputs"}
_JSON_SCHEMA_FIELDS = {"name", "description", "schema", "strict"}


def _structured(body: dict) -> StructuredOutput | None:
    """response_format (OpenAI's: text, json_object, json_schema) or structured_outputs (vLLM's
    extension: one of json, json_object, regex, choice, grammar) as a StructuredOutput."""
    rf, so = body.get("response_format"), body.get("structured_outputs")
    if rf is not None and so is not None:
        raise bad("give one of 'response_format' and 'structured_outputs', not both", "structured_outputs")
    if rf is not None:
        if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
            raise bad("'response_format' must be an object with a 'type' (text, json_object or json_schema)",
                      "response_format")
        kind = rf["type"]
        extra = set(rf) - {"type", "json_schema"}
        if extra:
            raise bad(f"unknown field 'response_format.{sorted(extra)[0]}'", "response_format")
        if kind == "text":
            return None
        if kind == "json_object":
            return StructuredOutput(json_object=True)
        if kind != "json_schema":
            raise bad(f"'response_format.type' must be text, json_object or json_schema, got {kind!r}",
                      "response_format")
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema"), dict):
            raise bad("'response_format.json_schema' must be an object with a 'schema' object", "response_format")
        extra = set(js) - _JSON_SCHEMA_FIELDS
        if extra:
            raise bad(f"unknown field 'response_format.json_schema.{sorted(extra)[0]}'", "response_format")
        if js.get("strict") is not None and not isinstance(js["strict"], bool):
            raise bad("'response_format.json_schema.strict' must be a boolean", "response_format")
        return StructuredOutput(json=js["schema"])  # strict or not, the output follows the schema exactly
    if so is not None:
        if not isinstance(so, dict):
            raise bad("'structured_outputs' must be an object with one of json, json_object, regex, choice, "
                      "grammar", "structured_outputs")
        try:
            return StructuredOutput(**so)
        except (TypeError, ValueError) as e:
            raise bad(f"'structured_outputs': {e}", "structured_outputs") from None
    return None


def _params(body: dict, chat: bool, logprobs: int | None) -> SamplingParams:
    for name, (kinds, what) in _SAMPLING.items():
        _check_type(body, name, kinds, what)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p", "repetition_penalty"):
        v = body.get(name)
        if v is not None and not math.isfinite(v):
            raise bad(f"'{name}' must be finite, got {v!r}", name)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad(f"'stop' must be a string or a list of strings, got {stop!r}"[:300], "stop")
    if isinstance(stop, str):
        stop = [stop]
    stop = [s for s in (stop or []) if s]  # OpenAI ignores empty stop strings
    max_tokens = body.get("max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = body.get("max_tokens", None if chat else 16)  # OpenAI's defaults: 16 for completions
    n = body.get("n") or 1
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise bad(f"'best_of' ({best_of}) other than n ({n}) is not supported", "best_of", "unsupported_parameter")
    kw = dict(max_tokens=max_tokens, temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
              n=n, stop=tuple(stop), seed=body.get("seed"), logprobs=logprobs,
              presence_penalty=body.get("presence_penalty") or 0.0,
              frequency_penalty=body.get("frequency_penalty") or 0.0, logit_bias=body.get("logit_bias"),
              top_k=body.get("top_k") or 0, min_p=body.get("min_p") or 0.0,
              repetition_penalty=body.get("repetition_penalty") or 1.0, min_tokens=body.get("min_tokens") or 0,
              ignore_eos=bool(body.get("ignore_eos") or False), stop_token_ids=tuple(body.get("stop_token_ids") or ()),
              structured=_structured(body))
    for k in ("temperature", "top_p"):
        if kw[k] is None:
            kw[k] = 1.0
    try:
        return SamplingParams(**kw)
    except (ValueError, TypeError) as e:  # SamplingParams names the field first
        msg = str(e)
        name = msg.split(" ", 1)[0]
        if chat:
            name = {"logprobs": "top_logprobs", "max_tokens": "max_completion_tokens"
                    if "max_completion_tokens" in body else "max_tokens"}.get(name, name)
        raise bad(msg, name if name in body else None) from None


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = bool(body.get("stream") or False)
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not stream:
            raise bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
        unknown = set(opts) - {"include_usage", "include_obfuscation"}
        if unknown:
            raise bad(f"unknown field 'stream_options.{sorted(unknown)[0]}'", "stream_options")
        include_usage = opts.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise bad("'stream_options.include_usage' must be a boolean", "stream_options")
    return stream, include_usage


def completion_request(body: object) -> Request:
    """A /v1/completions body: prompt is a string, a list of strings, a list of token ids, or a
    list of lists of token ids."""
    body, model = _common(body, False, _KNOWN_BOTH | {"prompt", "logprobs"})
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompts = [list(prompt)]
    elif (isinstance(prompt, list) and prompt and all(isinstance(p, list) and p for p in prompt)
          and all(isinstance(t, int) and not isinstance(t, bool) for p in prompt for t in p)):
        prompts = [list(p) for p in prompt]
    else:
        raise bad("'prompt' must be a string, a list of strings, a list of token ids or a list of lists of "
                  "token ids (none empty)", "prompt")
    lp = _check_type(body, "logprobs", _INT, "an integer (top tokens per position) or null")
    stream, include_usage = _stream_flags(body)
    return Request(model=model, params=_params(body, False, lp), stream=stream, include_usage=include_usage,
                   prompts=prompts, fields=frozenset(body))


def _message(m: object, i: int) -> dict:
    if not isinstance(m, dict):
        raise bad(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
    role = m.get("role")
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise bad(f"messages[{i}].role must be one of system, developer, user, assistant, tool; got {role!r}",
                  f"messages[{i}].role")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text ones
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad(f"messages[{i}].content[{k}]: only text parts are supported, got {kind!r}",
                          f"messages[{i}].content")
            texts.append(part["text"])
        content = "".join(texts)
    elif content is not None and not isinstance(content, str):
        raise bad(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")
    out = {"role": "system" if role == "developer" else role, "content": content or ""}
    if isinstance(m.get("name"), str):
        out["name"] = m["name"]
    calls = m.get("tool_calls")
    if calls:
        if role != "assistant":
            raise bad(f"messages[{i}].tool_calls: only an assistant message makes tool calls", f"messages[{i}].tool_calls")
        if not isinstance(calls, list):
            raise bad(f"messages[{i}].tool_calls must be a list", f"messages[{i}].tool_calls")
        for k, c in enumerate(calls):
            fn = c.get("function") if isinstance(c, dict) else None
            if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("arguments"), str)):
                raise bad(f"messages[{i}].tool_calls[{k}] must be {{'id', 'type': 'function', 'function': "
                          "{'name': str, 'arguments': JSON text}}", f"messages[{i}].tool_calls")
            try:
                json.loads(fn["arguments"])
            except json.JSONDecodeError:
                raise bad(f"messages[{i}].tool_calls[{k}].function.arguments is not valid JSON",
                          f"messages[{i}].tool_calls") from None
        out["tool_calls"] = calls
    if role == "tool":
        if not isinstance(m.get("tool_call_id"), str):
            raise bad(f"messages[{i}]: a tool message needs 'tool_call_id' (the id of the call it answers)",
                      f"messages[{i}].tool_call_id")
        out["tool_call_id"] = m["tool_call_id"]
    return out


def chat_request(body: object) -> Request:
    """A /v1/chat/completions body."""
    body, model = _common(body, True, _KNOWN_BOTH | {"messages", "logprobs", "top_logprobs", "tools", "tool_choice",
                                                     "parallel_tool_calls"})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list of messages", "messages")
    msgs = [_message(m, i) for i, m in enumerate(messages)]
    want = _check_type(body, "logprobs", _BOOL, "a boolean")
    top = _check_type(body, "top_logprobs", _INT, "an integer")
    if top is not None and not want:
        raise bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    stream, include_usage = _stream_flags(body)
    tools = None
    if body.get("tools") is not None:
        try:
            tools = tool_calls.check_tools(body["tools"])
        except (TypeError, ValueError) as e:
            raise bad(f"'tools': {e}", "tools") from None
    try:
        tool_calls.check_choice(body.get("tool_choice"), tools)
    except (TypeError, ValueError) as e:
        raise bad(f"'tool_choice': {e}", "tool_choice") from None
    parallel = _check_type(body, "parallel_tool_calls", _BOOL, "a boolean")
    r = Request(model=model, params=_params(body, True, (top or 0) if want else None), stream=stream,
                include_usage=include_usage, messages=msgs, chat=True, fields=frozenset(body), tools=tools,
                tool_choice=body.get("tool_choice"), parallel_tool_calls=True if parallel is None else parallel)
    r.id = "chatcmpl-" + r.id[5:]
    return r


# ---- writing results ----
def _usage(completions: list[Completion]) -> dict:
    return openai_usage(sum(c.usage.prompt_tokens for c in completions),
                        sum(c.usage.completion_tokens for c in completions),
                        sum(c.usage.cached_tokens for c in completions))


def response(req: Request, completions: list[Completion]) -> dict:
    """The whole (non-stream) response: the choices of every prompt, numbered prompt by prompt."""
    choices = []
    n = req.params.n
    for j, c in enumerate(completions):
        for ch in c.to_openai()["choices"]:
            ch["index"] += j * n
            choices.append(ch)
    return {"id": req.id, "object": "chat.completion" if req.chat else "text_completion", "created": req.created,
            "model": req.model, "choices": choices, "usage": _usage(completions)}


class ChunkWriter:
    """Stream chunks of one response, as OpenAI streams them: chat's first delta of each choice
    carries the role, its last chunk has an empty delta and finish_reason; completions carry
    finish_reason on their last text chunk; the usage chunk (choices: []) when asked."""

    def __init__(self, req: Request, token_text):
        self.req = req
        self._text = token_text  # token id -> its text
        self._offsets: dict[int, int] = {}  # completions logprobs: text offset per choice

    def _chunk(self, choices: list[dict]) -> dict:
        d = {"id": self.req.id, "object": "chat.completion.chunk" if self.req.chat else "text_completion",
             "created": self.req.created, "model": self.req.model, "choices": choices}
        if self.req.include_usage:
            d["usage"] = None
        return d

    def opening(self) -> list[dict]:
        """Chat: one role delta per choice, before any token."""
        if not self.req.chat:
            return []
        return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}]) for i in range(self.req.params.n)]

    def token(self, j: int, c: Chunk) -> list[dict]:
        """The chunks for one generated token of prompt j (none when it releases no text and
        carries nothing else)."""
        index = j * self.req.params.n + c.index
        with_lp = c.logprob is not None
        reason = None if c.finish_reason is None else openai_reason(c.finish_reason)
        out = []
        if c.text or with_lp:
            if self.req.chat:
                lp = None
                if with_lp:
                    lp = {"content": [openai_chat_logprob(self._text(c.token_id), c.logprob, c.top_logprobs or [])]}
                out.append(self._chunk([{"index": index, "delta": {"content": c.text}, "logprobs": lp,
                                         "finish_reason": None}]))
            else:
                lp = None
                if with_lp:
                    tok = self._text(c.token_id)
                    off = self._offsets.get(index, 0)
                    self._offsets[index] = off + len(tok)
                    lp = {"tokens": [tok], "token_logprobs": [c.logprob],
                          "top_logprobs": [{s: v for _, s, v in c.top_logprobs or []}], "text_offset": [off]}
                out.append(self._chunk([{"index": index, "text": c.text, "logprobs": lp,
                                         "finish_reason": reason}]))
                if reason is not None:
                    return out
        if reason is not None:
            if self.req.chat:
                for k, call in enumerate(c.tool_calls or []):
                    out.extend(self._chunk([{"index": index, "delta": {"tool_calls": [d]}, "logprobs": None,
                                             "finish_reason": None}]) for d in tool_call_deltas(k, call))
                out.append(self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]))
            else:
                out.append(self._chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": reason}]))
        return out

    def usage(self, completions: list[Completion]) -> dict:
        d = self._chunk([])
        d["usage"] = _usage(completions)
        return d


ARGUMENT_PIECE = 16  # characters of a call's arguments per streamed delta


def tool_call_deltas(k: int, call) -> list[dict]:
    """One tool call as OpenAI streams it: its id, type and name once (arguments ""), then the
    arguments in pieces that concatenate to its JSON text."""
    out = [{"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}]
    args = call.arguments
    for i in range(0, len(args), ARGUMENT_PIECE):
        out.append({"index": k, "function": {"arguments": args[i:i + ARGUMENT_PIECE]}})
    return out

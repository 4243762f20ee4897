"""What generation returns: Completion (the OpenAI shape in Python), its choices, usage and
timings, and the Chunk a stream yields."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Logprob:
    """A generated token's log-probability, with the most likely alternatives at that step."""

    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (token id, text, logprob)


@dataclass
class Choice:
    """One sample: its text (cut before a stop string), token ids (an EOS or stop token that
    ended it included, as vLLM returns them; its text is not), and why it ended: "stop" (EOS, a
    stop token or a stop string), "length" (max_tokens or the context) or "tool_calls"."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    logprobs: list[Logprob] | None = None
    stop_reason: str | int | None = None  # the stop string or token that ended it, if any
    # the calls it made when tools were given (fastlm.tool_calls.ToolCall; finish_reason
    # "tool_calls"), text then being the content before them
    tool_calls: list | None = None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused, not computed

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Wall-clock seconds of one call (shared by the completions of a batch)."""

    time_to_first_token_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prefill_tokens: int = 0   # prompt tokens actually computed (cached ones excluded)
    decode_tokens: int = 0    # tokens fed back through the model after the first

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s


@dataclass
class Completion:
    """The result for one prompt (or one conversation): n choices, usage and timings."""

    choices: list[Choice]
    usage: Usage
    timings: Timings
    model: str = ""
    chat: bool = False
    id: str = field(default_factory=lambda: "cmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.choices[0].token_ids

    @property
    def finish_reason(self) -> str:
        return self.choices[0].finish_reason

    @property
    def logprobs(self) -> list[Logprob] | None:
        return self.choices[0].logprobs

    def to_openai(self) -> dict:
        """The dict an OpenAI client expects: a chat.completion for chat(), else a text_completion.
        A sample cut short ("abort": its stream was closed) reports "stop", the nearest reason the
        OpenAI types allow."""
        usage = openai_usage(self.usage.prompt_tokens, self.usage.completion_tokens, self.usage.cached_tokens)
        choices = []
        for c in self.choices:
            if self.chat:
                lp = None if c.logprobs is None else {"content": [
                    openai_chat_logprob(t.token, t.logprob, t.top) for t in c.logprobs]}
                msg = {"role": "assistant", "content": c.text}
                if c.tool_calls:
                    msg = {"role": "assistant", "content": c.text or None,
                           "tool_calls": [t.to_openai() for t in c.tool_calls]}
                choices.append({"index": c.index, "message": msg, "logprobs": lp,
                                "finish_reason": openai_reason(c.finish_reason)})
            else:
                lp = None
                if c.logprobs is not None:
                    offsets, pos = [], 0
                    for t in c.logprobs:
                        offsets.append(pos)
                        pos += len(t.token)
                    lp = {"tokens": [t.token for t in c.logprobs],
                          "token_logprobs": [t.logprob for t in c.logprobs],
                          "top_logprobs": [{s: v for _, s, v in t.top} for t in c.logprobs],
                          "text_offset": offsets}
                choices.append({"index": c.index, "text": c.text, "logprobs": lp,
                                "finish_reason": openai_reason(c.finish_reason)})
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices, "usage": usage}


def openai_reason(reason: str) -> str:
    """A finish reason as the OpenAI types allow it ("abort", a closed stream, becomes "stop")."""
    return "stop" if reason == "abort" else reason


def openai_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def openai_chat_logprob(token: str, logprob: float, top: list[tuple[int, str, float]]) -> dict:
    """One token of a chat choice's logprobs.content, with its top alternatives."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8")),
            "top_logprobs": [{"token": s, "logprob": v, "bytes": list(s.encode("utf-8"))} for _, s, v in top]}


@dataclass(frozen=True)
class Chunk:
    """One generated token as a stream delivers it. text is the new text it releases: never half a
    UTF-8 character, never part of a stop string (held back until it cannot become one, so it may
    be ""). finish_reason is set on the last chunk of a sample; index is the sample (0..n-1)."""

    text: str
    token_id: int
    index: int = 0
    logprob: float | None = None
    top_logprobs: list[tuple[int, str, float]] | None = None
    finish_reason: str | None = None
    tool_calls: list | None = None  # on the last chunk of a sample that called tools

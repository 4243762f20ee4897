"""The HTTP app: OpenAI's routes over one Engine (fastapi, streamed with sse-starlette), its
health and Prometheus metrics, and a chat page at /.

Every request becomes calls of the Engine's scheduler, so concurrent requests decode together
(continuous batching); a client that disconnects cancels its calls, which frees their slots at
the next step.

>>> app = create_app(Engine.from_pretrained(), model_name="smollm2-135m-instruct")  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)                                  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, Union

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from fastlm.engine import ContextOverflow, Engine
from fastlm.generation import AsyncStream
from fastlm.scheduler import QueueFull
from fastlm.structured import StructuredOutputError
from fastlm.server.protocol import APIError, ChunkWriter, chat_request, completion_request, response

PAGE = Path(__file__).with_name("page.html")
DISCONNECT_POLL_S = 0.1  # how often a non-stream request checks that its client is still there


def _dumps(d: dict) -> str:
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


class _State:
    """The engine once loaded (or why it failed), and what the routes need besides."""

    def __init__(self, model_name: str | None, api_key: str | None):
        self.engine: Engine | None = None
        self.error: str | None = None
        self.model_name = model_name
        self.api_key = api_key
        self.created = int(time.time())

    def set_engine(self, engine: Engine) -> None:
        if self.model_name is None:
            self.model_name = Path(engine.source).name
        self.engine = engine

    def ready(self) -> Engine:
        if self.engine is None:
            if self.error is not None:
                raise APIError(503, f"the model failed to load: {self.error}", type="server_error",
                               code="model_load_failed")
            raise APIError(503, "the model is still loading", type="server_error", code="model_loading")
        return self.engine


def create_app(engine: Union[Engine, Callable[[], Engine]], *, model_name: str | None = None,
               api_key: str | None = None, on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The app over an Engine, or over a function that loads one: then it loads in a thread when
    the app starts, /health answers 503 meanwhile and the API routes 503 "loading"; a failed load
    answers 503 with the reason (and calls on_load_error).

    model_name: the id requests name in "model" (default: the model folder's or file's name);
    another id is answered 404. api_key: when set, /v1 routes need "Authorization: Bearer KEY".
    """
    state = _State(model_name, api_key)
    loader = None
    if isinstance(engine, Engine):
        state.set_engine(engine)
    elif callable(engine):
        loader = engine
    else:
        raise TypeError(f"create_app takes an Engine or a function returning one, got {type(engine).__name__}")

    def load() -> None:
        try:
            state.set_engine(loader())
        except BaseException as e:  # noqa: BLE001 - reported on /health and to on_load_error
            state.error = f"{type(e).__name__}: {e}"
            if on_load_error is not None:
                on_load_error(e)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if loader is not None:
            threading.Thread(target=load, name="fastlm-load", daemon=True).start()
        yield

    app = FastAPI(title="fastlm", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.fastlm = state

    # ---- errors, in OpenAI's shape ----
    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return JSONResponse(APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                                     code=code).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception):
        return JSONResponse(APIError(500, f"{type(e).__name__}: {e}", type="server_error").body(), status_code=500)

    def authorize(request: Request) -> None:
        if state.api_key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, key = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
            raise APIError(401, "Incorrect API key provided" if got else
                           "Missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")

    def check_model(name: str) -> None:
        if name != state.model_name:
            raise APIError(404, f"The model '{name}' does not exist (this server runs '{state.model_name}')",
                           param="model", code="model_not_found")

    async def body_of(request: Request) -> object:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None

    # ---- routes ----
    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        if state.engine is None:
            body = {"status": "error", "error": state.error} if state.error else {"status": "loading"}
            return JSONResponse(body, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(prometheus(state), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        state.ready()
        return {"object": "list", "data": [model_card(state)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        authorize(request)
        state.ready()
        check_model(name)
        return model_card(state)

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        req = completion_request(await body_of(request))
        return await run(state, request, req)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        req = chat_request(await body_of(request))
        return await run(state, request, req)

    async def run(state: _State, request: Request, req):
        engine = state.ready()
        check_model(req.model)
        if req.chat and (engine.tokenizer is None or not engine.tokenizer.config.get("chat_template")):
            raise APIError(400, f"{state.model_name} has no chat template: use /v1/completions", param="messages")
        streams = start(engine, req)
        if req.stream:
            return EventSourceResponse(events(engine, req, streams), sep="\n", ping=15)
        watch = asyncio.create_task(close_on_disconnect(request, streams))
        try:
            async for _ in merged(streams):
                pass
        finally:
            watch.cancel()
            for s in streams:
                s.close()
        return JSONResponse(response(req, [s.generation.completions()[0] for s in streams]))

    return app


def model_card(state: _State) -> dict:
    engine = state.engine
    return {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "fastlm",
            "context_length": engine.context_length, "dtype": engine.info.get("dtype"),
            "weight_bytes": int(engine.model.weight_bytes)}


def start(engine: Engine, req) -> list[AsyncStream]:
    """The request's calls, submitted: one per prompt (they decode together with every other
    call in flight). A refusal closes those already submitted."""
    streams: list[AsyncStream] = []
    try:
        if req.chat:
            streams.append(engine.achat_stream(req.messages, req.params, tools=req.tools, tool_choice=req.tool_choice,
                                               parallel_tool_calls=req.parallel_tool_calls))
        else:
            for p in req.prompts:
                streams.append(engine.astream(p, req.params))
    except BaseException as e:
        for s in streams:
            s.close()
        if isinstance(e, QueueFull):
            raise APIError(429, f"the server is busy: {e}", type="rate_limit_error", code="rate_limit_exceeded") from None
        if isinstance(e, StructuredOutputError):
            param = "structured_outputs" if "structured_outputs" in req.fields else "response_format"
            raise APIError(400, str(e), param=param, code="invalid_structured_output") from None
        if isinstance(e, ImportError):  # an optional extra the request needs
            raise APIError(400, str(e), code="unsupported_parameter") from None
        if isinstance(e, ContextOverflow):
            raise APIError(400, f"This model's maximum context length is {e.context} tokens; {e}",
                           param="messages" if req.chat else "prompt", code="context_length_exceeded") from None
        if isinstance(e, (ValueError, TypeError)):
            raise APIError(400, str(e), param="messages" if req.chat else "prompt") from None
        raise
    return streams


async def merged(streams: list[AsyncStream]) -> AsyncIterator[tuple[int, object]]:
    """(prompt index, Chunk) from every stream, as they come."""
    if len(streams) == 1:
        async for c in streams[0]:
            yield 0, c
        return
    q: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(j: int, s: AsyncStream) -> None:
        try:
            async for c in s:
                q.put_nowait((j, c))
            q.put_nowait((j, done))
        except Exception as e:  # noqa: BLE001 - handed to the reader, which raises it
            q.put_nowait((j, e))

    tasks = [asyncio.create_task(pump(j, s)) for j, s in enumerate(streams)]
    try:
        left = len(streams)
        while left:
            j, item = await q.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield j, item
    finally:
        for t in tasks:
            t.cancel()
        for s in streams:
            s.close()


async def close_on_disconnect(request: Request, streams: list[AsyncStream]) -> None:
    """A non-stream request whose client went away: its calls are cancelled."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    for s in streams:
        s.close()


async def events(engine: Engine, req, streams: list[AsyncStream]) -> AsyncIterator[str]:
    """The SSE data of a streamed response: its chunks, the usage chunk when asked, [DONE]. A
    client that disconnects cancels this generator, which closes the calls."""
    tok = engine.tokenizer
    writer = ChunkWriter(req, (lambda t: tok.decode([t])) if tok is not None else (lambda t: ""))
    try:
        for d in writer.opening():
            yield _dumps(d)
        async for j, c in merged(streams):
            for d in writer.token(j, c):
                yield _dumps(d)
        if req.include_usage:
            yield _dumps(writer.usage([s.generation.completions()[0] for s in streams]))
    except Exception as e:  # noqa: BLE001 - a failure mid-stream: the client gets an error event
        yield _dumps(APIError(500, f"{type(e).__name__}: {e}", type="server_error").body())
    finally:
        for s in streams:
            s.close()
    yield "[DONE]"


def prometheus(state: _State) -> str:
    """Prometheus' text format: the scheduler's counters, gauges and time to first token."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, value: float, labels: str = "") -> None:
        lines.append(f"# HELP fastlm_{name} {help_}")
        lines.append(f"# TYPE fastlm_{name} {kind}")
        lines.append(f"fastlm_{name}{labels} {value:g}" if isinstance(value, int) else f"fastlm_{name}{labels} {value!r}")

    engine = state.engine
    metric("up", "gauge", "1 once the model is loaded.", int(engine is not None))
    if engine is None:
        return "\n".join(lines) + "\n"
    sched = engine.scheduler
    st = sched.stats
    metric("requests_total", "counter", "Calls submitted (one per prompt of a request).", st.requests)
    metric("requests_finished_total", "counter", "Calls that ran to their end.", st.finished)
    metric("requests_cancelled_total", "counter", "Calls cancelled (a stream closed, a client gone).", st.cancelled)
    metric("requests_failed_total", "counter", "Calls that ended in an error.", st.failed)
    metric("prompt_tokens_total", "counter", "Prompt tokens computed (cached ones excluded).", st.prompt_tokens)
    metric("generation_tokens_total", "counter", "Tokens generated.", st.generated_tokens)
    metric("steps_total", "counter", "Scheduler steps.", st.steps)
    metric("queue_depth", "gauge", "Calls waiting for slots.", sched.queue_depth)
    metric("busy_slots", "gauge", "KV cache slots held by calls in flight.", sched.busy_slots)
    metric("max_slots", "gauge", "Sequences decoded at once.", sched.max_slots)
    metric("generation_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s.",
           float(st.tokens_per_s()))
    ttft = sorted(st.ttft_s)
    lines.append("# HELP fastlm_time_to_first_token_seconds Time from a call's submission to its first token "
                 "(quantiles over the last 1000 calls).")
    lines.append("# TYPE fastlm_time_to_first_token_seconds summary")
    for q in (0.5, 0.95, 0.99):
        v = ttft[min(len(ttft) - 1, int(q * len(ttft)))] if ttft else float("nan")
        lines.append(f'fastlm_time_to_first_token_seconds{{quantile="{q}"}} {v!r}')
    lines.append(f"fastlm_time_to_first_token_seconds_sum {st.ttft_sum_s!r}")
    lines.append(f"fastlm_time_to_first_token_seconds_count {st.first_tokens}")
    steps = list(st.cancel_steps)
    metric("cancel_steps_max", "gauge", "Most scheduler steps begun between a cancel and its slots being free "
           "(last 1000 cancels).", max(steps) if steps else 0)
    return "\n".join(lines) + "\n"

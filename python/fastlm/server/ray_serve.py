"""The OpenAI server on Ray Serve: the same app (fastlm.server.create_app) in `replicas` copies,
each an Engine with its own cores, behind a router that sends a request to the replica chosen by
a hash of its prompt prefix, so requests that share a system prompt or a conversation's start land
where that prefix is already cached.

    pip install "fastlm[server]" "ray[serve]"
    fastlm serve --replicas 2 --cores-per-replica 4 --port 8000   # or, from Python:

    import ray
    from ray import serve
    from fastlm.server.ray_serve import application
    ray.init()
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(application("smollm2-135m-instruct", replicas=2, cores_per_replica=4), route_prefix="/")

The routes are the app's own (/v1/completions, /v1/chat/completions, /v1/models, /health,
/metrics, the chat page): the router forwards the request's method, path, headers and body to a
replica, which runs them through the app in process (ASGI) and streams the response back as the
app writes it, server-sent events included; a client that disconnects cancels the replica's call.
Responses carry `x-fastlm-replica`; a request with that header goes to the replica it names (to read
one replica's /metrics or /health). Routes without a prompt (models, health, metrics, the page) go
to replica 0 otherwise.

Why a router deployment and one deployment per replica rather than Ray's replica scheduler: the
scheduler picks among a deployment's replicas by load, and a prefix hash has to name one replica.
"""
# (no `from __future__ import annotations`: Ray Serve re-wraps the route methods, and FastAPI then
# cannot resolve string annotations such as Request)
import asyncio
import hashlib
import json
from typing import Optional

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from ray import serve

from fastlm._runtime import set_num_threads
from fastlm.engine import Engine
from fastlm.hub import DEFAULT_MODEL
from fastlm.server.app import create_app

PREFIX_CHARS = 512  # of a prompt, or of a chat's first two messages as JSON: the routing key


def prefix_key(path: str, body: bytes) -> Optional[str]:
    """The prompt prefix a request is routed by, or None (no prompt: replica 0)."""
    if not path.endswith(("/completions", "/chat/completions")):
        return None
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # the replica answers 400 for it
    if not isinstance(req, dict):
        return None
    if path.endswith("/chat/completions"):
        messages = req.get("messages")
        key = json.dumps(messages[:2], sort_keys=True) if isinstance(messages, list) else None
    else:
        prompt = req.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch: its first prompt's replica
        key = prompt if isinstance(prompt, str) else json.dumps(prompt) if prompt is not None else None
    return None if key is None else key[:PREFIX_CHARS]


def pick(path: str, body: bytes, n: int) -> int:
    key = prefix_key(path, body)
    if key is None or n == 1:
        return 0
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % n


class Replica:
    """One Engine and the app over it; `call` runs one HTTP request through the app and yields its
    response start ({"status", "headers"}) and then its body pieces."""

    def __init__(self, index: int, model: str, threads: Optional[int], engine_args: dict, app_args: dict):
        if threads:
            set_num_threads(threads)
        self.index = index
        self.app = create_app(Engine.from_pretrained(model, **engine_args), **app_args)

    async def call(self, method: str, path: str, query: str, headers: list, body: bytes):
        out: asyncio.Queue = asyncio.Queue()
        finished = asyncio.Event()
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # the response was read to its end, or the client went away
            return {"type": "http.disconnect"}

        async def send(message):
            await out.put(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                 "root_path": "", "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                 "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
        task = asyncio.create_task(self.app(scope, receive, send))
        task.add_done_callback(lambda _: out.put_nowait(None))
        try:
            while True:
                message = await out.get()
                if message is None:  # the app returned (or raised: re-raised below)
                    break
                if message["type"] == "http.response.start":
                    yield {"status": message["status"],
                           "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
                           + [("x-fastlm-replica", str(self.index))]}
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        yield message["body"]
                    if not message.get("more_body"):
                        break
        finally:
            finished.set()  # a stream closed early reads as a disconnect: the app cancels its calls
            await asyncio.wait_for(task, 30)


router = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(router)
class Router:
    """The HTTP entry: each request to the replica its prompt prefix hashes to."""

    def __init__(self, *replicas):
        self.replicas = replicas

    @router.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(self, request: Request, path: str):
        body = await request.body()
        path = "/" + path
        asked = request.headers.get("x-fastlm-replica", "")  # a replica named: its /metrics, /health
        n = len(self.replicas)
        i = int(asked) if asked.isdigit() and int(asked) < n else pick(path, body, n)
        gen = self.replicas[i].options(stream=True).call.remote(
            request.method, path, request.url.query, list(request.headers.items()), body)
        start = await gen.__anext__()
        headers = {k: v for k, v in start["headers"] if k.lower() not in ("content-length", "transfer-encoding")}

        async def rest():
            done = False
            try:
                async for piece in gen:
                    yield piece
                done = True
            finally:
                if not done:
                    gen.cancel()  # the client left early: the replica's generator closes, its call is cancelled

        return StreamingResponse(rest(), status_code=start["status"], headers=headers)


def application(model: Optional[str] = None, *, replicas: int = 1, cores_per_replica: Optional[int] = None,
                model_name: Optional[str] = None, api_key: Optional[str] = None, **engine_args):
    """A Ray Serve application: `replicas` deployments of the app over `model` (each with
    cores_per_replica CPUs reserved and as many kernel threads; None: Ray's default of 1 CPU and
    fastlm's default threads), behind the prefix-hash Router. engine_args go to
    Engine.from_pretrained (dtype, max_slots, max_seq_len, ...)."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    model = model or DEFAULT_MODEL
    name = model_name or (model if model == DEFAULT_MODEL else Path(model).name)
    bound = []
    for i in range(replicas):
        opts = {"num_cpus": cores_per_replica} if cores_per_replica else {}
        dep = serve.deployment(Replica, name=f"fastlm-{i}", num_replicas=1, ray_actor_options=opts)
        bound.append(dep.bind(i, str(model), cores_per_replica, engine_args,
                              {"model_name": name, "api_key": api_key}))
    return Router.bind(*bound)

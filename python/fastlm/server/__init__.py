"""An OpenAI-compatible HTTP server over an Engine: ``fastlm serve``, or in Python

>>> from fastlm.server import create_app, Server           # doctest: +SKIP
>>> with Server(create_app(engine)) as url:                # doctest: +SKIP
...     openai.OpenAI(base_url=url + "/v1", api_key="-")   # doctest: +SKIP

Needs the server extra: ``pip install "fastlm[server]"`` (fastapi, uvicorn, sse-starlette).
"""
from __future__ import annotations

try:  # the optional extra: without it, say which to install
    import fastapi  # noqa: F401
    import sse_starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by a test in a subprocess
    raise ImportError(f"the fastlm server needs the server extra: pip install \"fastlm[server]\" "
                      f"(fastapi, uvicorn, sse-starlette); missing: {e.name}") from None

from fastlm.server.app import create_app
from fastlm.server.run import Server, is_loopback

__all__ = ["Server", "create_app", "is_loopback"]

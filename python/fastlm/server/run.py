"""Running the app with uvicorn: in the foreground (``fastlm serve``) or in a thread (tests,
benchmarks, an app that embeds the server)."""
from __future__ import annotations

import ipaddress
import socket
import threading

import uvicorn


def is_loopback(host: str) -> bool:
    """Whether host names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (socket.gaierror, ValueError):
            return False


class Server:
    """The app served by uvicorn in a thread; ``with Server(app) as url:`` waits until it listens
    (port 0: a free port) and stops it at the end of the block."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                     timeout_graceful_shutdown=2))
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.run, name="fastlm-http", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server did not start (is the port in use?)")
            self._thread.join(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

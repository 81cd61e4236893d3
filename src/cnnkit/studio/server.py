"""Serving the app on uvicorn: a listening socket bound first, in the foreground or a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from ..errors import UsageError

__all__ = ["listen", "serve", "serve_in_thread"]


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: a free one).

    Raises:
        UsageError: the address cannot be used (a port in use, an unknown host).
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it every answer
        # after the first on a connection waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(f"cannot listen on {host}:{port} ({reason}); try another --port") from None
    return sock


def serve(app: object, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until interrupted."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def serve_in_thread(
    app: object, host: str = "127.0.0.1", timeout: float = 30.0
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on a free port of ``host`` in a daemon thread.

    Returns:
        (the base URL, a function that stops the server and waits for the thread).
    """
    import uvicorn

    sock = listen(host, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError(f"the studio server did not start within {timeout:.0f} s")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return f"http://{host}:{sock.getsockname()[1]}", stop

"""Run an ASGI app with uvicorn, with the limits both pages need: ``Server``.

uvicorn gives the listen backlog, the keep-alive timeout, h11's parser and the graceful drain
on SIGTERM/Ctrl-C. What it lacks is added in its h11 protocol here:

* a deadline for a connection's request head (uvicorn waits forever for a slow client's head);
* a bound on the head's size that also holds when the whole head arrives in one read (h11's
  ``max_incomplete_event_size`` only bounds a head that arrives in pieces);
* a connection cap that closes the oldest connection *not in a request* when a new one would go
  over it (uvicorn's ``limit_concurrency`` counts every open socket, so 2,000 slowloris sockets
  got every real client a 503: measured with benchmarks.serve_attacks);
* JSON instead of text for the 400 it answers to a malformed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .guard import json_error

__all__ = ["Server", "ServerLimits", "bind"]

_log = logging.getLogger("edge_infer.serve")
_ARRIVAL = itertools.count()  # the order connections were accepted in: "oldest" for _evict


@dataclass(frozen=True)
class ServerLimits:
    """What the HTTP layer enforces; the defaults suit a small machine. ``drain_timeout``: how
    long in-flight requests may finish after SIGTERM/Ctrl-C."""

    backlog: int = 1024
    max_connections: int = 512
    keep_alive: float = 5.0
    header_timeout: float = 10.0
    drain_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline and size bound, a connection cap that evicts
    idle connections, and JSON for its own 400 (see the module docstring)."""

    limits = ServerLimits()  # Server sets its own on a subclass

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._born = next(_ARRIVAL)  # an order, not a time: two accepts in one clock tick differ
        if len(self.connections) > self.limits.max_connections:
            self._evict()
        self._arm_header_deadline()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _evict(self) -> None:
        """Over the cap: close the oldest connection that is not in a request (a slow client's
        half-sent head, or an idle keep-alive), so they cannot lock out working clients; when
        every connection is mid-request, close this new one."""
        idle = [c for c in self.connections if isinstance(c, _Protocol) and c is not self
                and c._waiting_for_head() and not c.transport.is_closing()]
        victim = min(idle, key=lambda c: c._born) if idle else self
        _log.debug("over %d connections: closing one", self.limits.max_connections)
        victim.transport.close()

    def data_received(self, data: bytes) -> None:
        # h11 bounds only a head that arrives in pieces; one read can bring a 70 KB head whole.
        if self._waiting_for_head():
            end = data.find(b"\r\n\r\n")  # what follows the head is body, not counted
            self._head_bytes += end if end >= 0 else len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self.send_400_response("headers too large")
                return
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:
            self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self.loop.call_later(self.limits.header_timeout, self._headers_overdue, self.cycle)

    def _headers_overdue(self, cycle: Any) -> None:
        # Still the same cycle (no new request's headers arrived) and idle: close the socket.
        if self.cycle is cycle and self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        answer = json_error(400, "malformed HTTP request (bad request line or headers, or headers over "
                                 f"{self.limits.max_header_bytes:,} bytes)", headers={"connection": "close"})
        with contextlib.suppress(h11.LocalProtocolError):
            for event in (h11.Response(status_code=400, headers=answer.raw_headers, reason=b"Bad Request"),
                          h11.Data(data=bytes(answer.body)), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        self.transport.close()


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 picks a free one); raises ``OSError``.

    Listening already, so a client that connects as soon as the URL is printed waits in the
    kernel's queue until uvicorn accepts, instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class Server(uvicorn.Server):
    """uvicorn serving ``app`` on the bound ``sock`` (its address: ``server_address``, ``url``)
    with this module's protocol and ``limits``: the one runner of ``edge-infer serve``, the clean
    page and the tests.

    ``run()`` blocks until SIGTERM or Ctrl-C (in the main thread) or ``stop()`` (from another
    thread); then it calls ``on_stop()`` (e.g. answer queued work with 503), lets in-flight
    requests finish for ``drain_timeout`` s, closes ``sock`` and returns.
    """

    def __init__(self, app: Any, sock: socket.socket, *, limits: ServerLimits = ServerLimits(),
                 on_stop: Callable[[], None] = lambda: None) -> None:
        protocol = type("Protocol", (_Protocol,), {"limits": limits})
        super().__init__(uvicorn.Config(
            app, http=protocol, loop="asyncio", lifespan="on", ws="none", interface="asgi3",
            backlog=limits.backlog, limit_concurrency=None,  # the protocol caps connections itself
            timeout_keep_alive=int(max(1, limits.keep_alive)),
            timeout_graceful_shutdown=int(max(1, limits.drain_timeout)),
            h11_max_incomplete_event_size=limits.max_header_bytes, server_header=False,
            date_header=True, access_log=False, log_config=None, proxy_headers=False))
        self.socket, self._on_stop, self._stopped = sock, on_stop, threading.Event()
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        host, port = self.server_address
        self.url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    async def shutdown(self, sockets: Any = None) -> None:
        self._on_stop()  # on the loop, before in-flight requests are waited for
        await super().shutdown(sockets=sockets)

    def run(self, sockets: Any = None) -> None:
        try:
            with _quiet_signals():
                super().run(sockets=sockets or [self.socket])
        finally:
            self.socket.close()
            self._stopped.set()

    def stop(self, timeout: float = 15.0) -> None:
        """What SIGTERM does, from another thread; returns once ``run`` has (or after ``timeout`` s)."""
        self.handle_exit(signal.SIGTERM, None)
        self._stopped.wait(timeout)


@contextlib.contextmanager
def _quiet_signals() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it, once its own handlers are gone; make that a
    no-op so SIGTERM and Ctrl-C end the process with exit code 0 through the normal path."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda s, f: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

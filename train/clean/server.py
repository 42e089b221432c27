"""The cleaning page's server: uvicorn running ``app.create_app`` on loopback only.

uvicorn brings what the hand-built ``http.server`` lacked: a real listen backlog, a cap on
connections (``--limit-concurrency``: 503 past it), keep-alive timeouts and a graceful drain, and
an HTTP parser (h11) that refuses a ``Content-Length`` that is not plain ASCII digits (``-1``,
``+655``, ``²``) or two that disagree. Two limits it does not have are added here:

* a **header deadline**: uvicorn's keep-alive timer starts only after a first answer, so a
  client that opens a connection and sends its headers a byte at a time would hold it forever.
  ``DeadlineH11Protocol`` gives every request ``header_timeout`` seconds, counted from the
  connection (or the previous answer), to finish its headers, then answers 408 and closes;
* JSON for the parser's own 400 (uvicorn answers it in plain text), like every other error.

The socket is bound and listening before the server starts, so ``make_server(port=0)`` knows
its port, and ``serve_forever`` can run in a thread (tests) or in the main thread (the command,
where uvicorn turns Ctrl-C and SIGTERM into a graceful stop).

``DeadlineH11Protocol`` leans on uvicorn's ``H11Protocol`` internals (``cycle``, ``conn``,
``transport``, ``loop``); the tests of slow headers and bad lengths fail if those change.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import socket
import sys
import threading
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge_infer.serve.guard import LOOPBACK_HOSTS

from .app import CleanApp, create_app
from .ranking import CleanError, Run

__all__ = ["CleanServer", "Limits", "make_server", "serve"]

_log = logging.getLogger("train.clean")


@dataclass(frozen=True)
class Limits:
    """The server's limits; one user on loopback needs few connections and no patience."""

    header_timeout: float = 10.0  # seconds to send a request's headers
    body_timeout: float = 10.0  # seconds to send a body (at most app.MAX_BODY bytes)
    keep_alive: int = 5  # seconds an idle connection stays open
    max_connections: int = 256  # open connections; past it, 503 (a browser opens at most 256)
    backlog: int = 1024  # connections waiting to be accepted (socketserver's default is 5)
    drain: int = 5  # seconds running requests get to finish on shutdown


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request's headers, and JSON 400s."""

    header_timeout = Limits.header_timeout  # set per server by ``_protocol``

    def connection_made(self, transport) -> None:  # noqa: ANN001 (asyncio's signature)
        super().connection_made(transport)
        self._seen_cycle = None
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle  # a request's headers are complete: its app runs
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request's headers get their own deadline
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        _log.warning("closed a connection from %s: no request headers within %g s",
                     self.client, self.header_timeout)
        if self.conn.their_state is not h11.IDLE:  # answered already, the rest of a body trickling
            self.transport.close()
            return
        self._raw_error(408, "Request Timeout",
                        f"the request headers did not arrive within {self.header_timeout:g} s")

    def send_400_response(self, msg: str) -> None:
        self._raw_error(400, "Bad Request", f"not a valid HTTP request ({msg.rstrip('.')})")

    def _raw_error(self, status: int, reason: str, message: str) -> None:
        """Write a JSON error straight to the socket and close it (the HTTP state machine may
        be mid-request or broken, so h11 is not asked)."""
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()


def _protocol(header_timeout: float) -> type[DeadlineH11Protocol]:
    return type("CleanH11Protocol", (DeadlineH11Protocol,), {"header_timeout": header_timeout})


class CleanServer:
    """A bound socket and the uvicorn server that will answer on it."""

    def __init__(self, host: str, port: int, app: CleanApp, limits: Limits):
        self.app, self.limits = app, limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as e:
            self.socket.close()
            raise CleanError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
        self.socket.listen(limits.backlog)  # connections queue from now, before uvicorn's loop runs
        self.server_address = self.socket.getsockname()[:2]
        self.url = f"http://{_url_host(host)}:{self.server_address[1]}/"
        config = uvicorn.Config(
            create_app(app, body_timeout=limits.body_timeout, hosts=(*LOOPBACK_HOSTS, host)),
            http=_protocol(limits.header_timeout),
            lifespan="off", log_config=None, access_log=False, server_header=False,
            backlog=limits.backlog, limit_concurrency=limits.max_connections,
            timeout_keep_alive=limits.keep_alive, timeout_graceful_shutdown=limits.drain)
        self.uvicorn = uvicorn.Server(config)
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Answer until ``shutdown()`` (or, in the main thread, Ctrl-C / SIGTERM)."""
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running requests finish (``Limits.drain``), and return."""
        self.uvicorn.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def make_server(run: Run, *, host: str = "127.0.0.1", port: int = 0, top: int | None = None,
                limits: Limits = Limits()) -> CleanServer:
    """A server bound to ``host:port`` (0: a free port), duplicate scan started; call
    ``serve_forever()`` on it (``serve`` does, printing the URL)."""
    host = _loopback(host)
    app = CleanApp(run, top=top)
    server = CleanServer(host, port, app, limits)
    app.scan_dupes()
    return server


def serve(run: Run, *, host: str = "127.0.0.1", port: int = 0, top: int | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM; either lets running requests finish, then returns."""
    server = make_server(run, host=host, port=port, top=top)
    print(f"clean: {server.url}  (data: {run.data}; Ctrl-C to stop)", flush=True)
    # uvicorn drains on SIGINT/SIGTERM, then raises the signal again for the previous handler:
    # SIGTERM's default would kill the process before "stopped" and exit status 0.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        print("clean: stopped", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _loopback(host: str) -> str:
    """The page can move the user's files, so it listens on loopback only."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise CleanError(f"--host {host}: not a loopback address; clean serves and moves your files, "
                     "so it listens on 127.0.0.1, ::1 or localhost only")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


"""The cleaning page's server: uvicorn running ``app.create_app`` on loopback only.

The same runner as ``edge-infer serve`` (``edge_infer.serve.run``: a socket bound before uvicorn
starts, so ``make_server(port=0)`` knows its port; connection, header and keep-alive limits; a
graceful drain); the body deadline is the app's (``create_app(body_timeout=...)``). ``run`` runs
in a thread (tests, stopped with ``stop``) or in the main thread (the command, where Ctrl-C and
SIGTERM stop it gracefully).
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
import threading

from edge_infer.serve.guard import LOOPBACK_HOSTS
from edge_infer.serve.run import Server, ServerLimits, bind
from export.run_folder import RunFolder

from .app import CleanApp, create_app
from .ranking import CleanError

__all__ = ["CleanServer", "ServerLimits", "make_server", "serve"]

BODY_TIMEOUT = 10.0  # seconds to send an apply body (at most app.MAX_BODY bytes)


class CleanServer(Server):
    """The runner's ``Server`` answering with the page."""

    dupe_scan: threading.Thread  # the duplicate scan, for a caller (a test) that waits for it


def make_server(run: RunFolder, *, host: str = "127.0.0.1", port: int = 0, top: int | None = None,
                limits: ServerLimits | None = None, body_timeout: float = BODY_TIMEOUT) -> CleanServer:
    """A server bound to ``host:port`` (0: a free port), duplicate scan started; call ``run()``
    on it (``serve`` does, printing the URL)."""
    host, limits = _loopback(host), limits or ServerLimits()
    try:
        sock = bind(host, port, limits.backlog)
    except OSError as e:
        raise CleanError(f"--host {host} --port {port}: cannot listen there "
                         f"({e.strerror}); --port 0 picks a free port") from None
    state = CleanApp(run, top=top)
    server = CleanServer(create_app(state, body_timeout=body_timeout, hosts=(*LOOPBACK_HOSTS, host)), sock,
                         limits=limits)
    server.dupe_scan = state.scan_dupes()
    return server


def serve(run: RunFolder, *, host: str = "127.0.0.1", port: int = 0, top: int | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM; either lets running requests finish, then returns."""
    server = make_server(run, host=host, port=port, top=top)
    print(f"clean: {server.url}  (data: {run.data}; Ctrl-C to stop)", flush=True)
    server.run()
    print("clean: stopped", file=sys.stderr)


def _loopback(host: str) -> str:
    """The page can move the user's files, so it listens on loopback only."""
    if host == "localhost":
        return "127.0.0.1"
    with contextlib.suppress(ValueError):  # not an address: refused below
        if ipaddress.ip_address(host).is_loopback:
            return host
    raise CleanError(f"--host {host}: not a loopback address; clean serves and moves your files, "
                     "so it listens on 127.0.0.1, ::1 or localhost only")


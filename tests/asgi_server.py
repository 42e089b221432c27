"""Run an ASGI app on uvicorn in a thread, on 127.0.0.1 and a free port, for the tests.

The same uvicorn set-up as ``edge-infer serve`` (``edge_infer.serve.run.uvicorn_config``: h11,
header deadline, connection cap, JSON for malformed requests), over real sockets, so a test sees
what a client sees. Used by the serve tests and the clean page's tests.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

import uvicorn

from edge_infer.serve.run import ServerLimits, bind, uvicorn_config


@contextlib.contextmanager
def running(app: Any, limits: ServerLimits | None = None) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL ``http://127.0.0.1:PORT``."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, limits or ServerLimits()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()

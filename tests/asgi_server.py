"""Run an ASGI app on uvicorn in a thread, on 127.0.0.1 and a free port, for the tests.

The same runner as ``edge-infer serve`` (``edge_infer.serve.run.Server``: h11, header
deadline, connection cap, JSON for malformed requests), over real sockets, so a test sees what a
client sees. Used by the serve tests and the clean page's tests.

``gated(classifier)`` makes a model exactly as slow as a test needs: every batch waits for an
event the test sets, so "the queue is full" or "the deadline passed" is arranged, not guessed
from how fast this CPU decodes. ``python tests/asgi_server.py MODEL`` serves such a model the
way ``edge-infer serve`` does (``Server``, drained on SIGTERM), for the signal tests.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from benchmarks.web import in_thread
from edge_infer import Classifier
from edge_infer.serve import BatchConfig, create_app
from edge_infer.serve.run import Server, ServerLimits, bind

WAIT = 60.0  # seconds: a bound on a step that a broken server never finishes, never a measurement


@contextlib.contextmanager
def running(app: Any, limits: ServerLimits | None = None) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL ``http://127.0.0.1:PORT``.

    The socket listens before uvicorn starts, so a request sent at once waits in the kernel's
    queue rather than being refused; no wait for start-up is needed."""
    sock = bind("127.0.0.1", 0)
    server = Server(app, sock, limits=limits or ServerLimits())
    with contextlib.closing(sock), in_thread(server.run, server.stop):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class Gate:
    """A backend that runs ``backend`` once ``open`` is set; ``entered`` is set by the first batch."""

    name = "gated"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.open, self.entered = threading.Event(), threading.Event()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.open.wait(WAIT)
        return self.backend.run(batch)

    def describe(self) -> str:
        return f"gated {self.backend.describe()}"


def gated(classifier: Classifier) -> tuple[Classifier, Gate]:
    """``classifier``'s model behind a ``Gate``: nothing is answered until ``gate.open.set()``."""
    gate = Gate(classifier.backend)
    return Classifier(gate, classifier.info, source=classifier.source), gate


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Return once ``condition()`` holds (polled); fail after ``WAIT`` s naming ``what``."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT:g} s")
        time.sleep(0.005)


def serve_gated(model: str) -> None:
    """What ``edge-infer serve MODEL --max-batch 1 --timeout 30`` runs, on a gated model whose
    gate opens when the server is told to stop (after the drain), and the URL on stdout."""
    classifier, gate = gated(Classifier.load(model, threads=1))
    app = create_app(classifier, timeout=30, batching=BatchConfig(max_batch=1))
    sock = bind("127.0.0.1", 0)
    print(f"serving at http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)

    def stop() -> None:
        app.drain()
        gate.open.set()

    Server(app, sock, on_stop=stop).run()
    print("stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    serve_gated(sys.argv[1])

"""``serve(model_path, ...)``: what ``edge-infer serve`` runs, from model file to drained exit."""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from ..classifier import Classifier
from ..errors import EdgeInferError
from .app import DEFAULT_MAX_BYTES, create_app
from .batching import BatchConfig
from .guard import LOOPBACK_HOSTS
from .run import Server, ServerLimits, bind

__all__ = ["serve", "BatchConfig", "ServerLimits"]


def serve(model_path: str, *, host: str = "127.0.0.1", port: int = 8000,
          max_bytes: int = DEFAULT_MAX_BYTES, threads: int | None = None, timeout: float = 10.0,
          batching: BatchConfig | None = None, limits: ServerLimits | None = None,
          allow_hosts: tuple[str, ...] = (), access_log: bool = True, backend: str = "onnxruntime",
          inference_precision: str = "f32", providers: Sequence[str] | None = None) -> None:
    """Serve ``model_path`` over HTTP until SIGTERM or Ctrl-C, then drain and return.

    Binds 127.0.0.1 unless told otherwise: the server has no authentication. ``threads`` is
    onnxruntime's intra-op thread count; ``timeout`` bounds each prediction, from its headers to
    its answer; ``max_bytes`` bounds a request body; ``allow_hosts`` adds Host/Origin names to
    the loopback ones (a specific ``host`` is added too). ``backend``, ``inference_precision`` and
    ``providers`` are ``Classifier.load``'s.
    """
    logging.basicConfig(level=logging.INFO if access_log else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    clf = Classifier.load(model_path, threads=threads, backend=backend, inference_precision=inference_precision,
                          providers=providers)
    extra = list(allow_hosts)
    if host not in ("0.0.0.0", "::", "") and host not in LOOPBACK_HOSTS:
        extra.append(host)  # a client that reaches us by the address we bound sends it as Host
    app = create_app(clf, max_bytes=max_bytes, timeout=timeout, batching=batching,
                     allow_hosts=tuple(extra))  # HostGuard normalises them
    limits = limits or ServerLimits(drain_timeout=timeout)
    try:
        sock = bind(host, port, limits.backlog)
    except OSError as e:  # port taken, address not on this machine, no permission...
        raise EdgeInferError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another "
                             "--host/--port (--port 0 picks a free port)") from None
    server = Server(app, sock, limits=limits, on_stop=app.drain)
    print(f"edge-infer: serving {clf.source} ({len(clf.labels)} labels) at {server.url}", flush=True)
    if host not in LOOPBACK_HOSTS:
        print(f"edge-infer: listening on {host}: anyone who can reach this machine can use it "
              "(there is no authentication); browsers and clients must call it by a name given "
              "with --allow-host (or the address it listens on)", file=sys.stderr, flush=True)
    print("edge-infer: press Ctrl-C to stop", file=sys.stderr, flush=True)
    server.run()
    print("edge-infer: stopped", file=sys.stderr, flush=True)

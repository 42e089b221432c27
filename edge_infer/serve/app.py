"""``create_app(classifier)``: the ``edge-infer serve`` ASGI app, to run with uvicorn or to mount.

Routes: ``GET /`` the upload page (and ``/static/`` app.css, app.js, page.js); ``POST /predict``
a multipart ``file`` field or a raw image body, ``?top_k=N``; ``GET /health`` readiness (503
while stopping); ``GET /info`` the model's metadata without its provenance paths; ``GET /metrics``
Prometheus text. Every error is ``{"error": "..."}`` with a 4xx/5xx status, never a traceback.

``/predict`` has the shape LitServe gives a model server: decode the request (read the body
whole, take the image from it, ``preprocess.probe`` its header: 415 for bytes in no image
format, 400 for a broken one), batch (``Batcher``: admission, decode memory, the model), encode
the response (``Classifier.prediction``).

Limits, each with its own status: ``HostGuard`` (403) and ``BodyLimit`` (413/411) before the body
is read; a form of more than ``MAX_FORM_PARTS`` parts (400); one deadline, ``timeout``, over
reading, parsing, decoding and the model (408 while the body is still arriving, 503 after);
a full queue (503 + Retry-After); decode memory (413) and pixels (400) per image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib import resources
from typing import Any, AsyncIterator, MutableMapping

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import preprocess
from ..classifier import Classifier
from ..errors import ImageError, NotAnImage
from ..preprocess import DEFAULT_MAX_BYTES
from .batching import BatchConfig, Batcher, Refused
from .guard import LOOPBACK_HOSTS, BodyLimit, HostGuard, SecurityHeaders, exception_handlers, json_error
from .metrics import CONTENT_TYPE, Metrics

__all__ = ["create_app", "EdgeInferApp", "DEFAULT_TOP_K", "DEFAULT_MAX_BYTES", "MAX_FORM_PARTS"]

DEFAULT_TOP_K = 5
FORM_FIELD = "file"
MAX_FORM_PARTS = 16  # one image and a few fields; 1.6 M empty parts once took 21 s to parse
RAW_TYPES = ("application/octet-stream",)  # plus image/*; no Content-Type at all counts as raw
_log = logging.getLogger("edge_infer.serve")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
}
_STATIC = {"index.html": "text/html; charset=utf-8", "app.css": "text/css; charset=utf-8",
           "app.js": "text/javascript; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}


class EdgeInferApp:
    """The ASGI app ``create_app`` returns: the guarded Starlette app, plus ``batcher``,
    ``metrics`` and ``drain()`` for the process that runs it."""

    def __init__(self, classifier: Classifier, *, max_bytes: int, timeout: float,
                 batching: BatchConfig, allow_hosts: tuple[str, ...]) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.classifier, self.timeout = classifier, timeout
        self.metrics = Metrics(queue_depth=lambda: self.batcher.in_flight)
        self.batcher = Batcher(classifier, batching, on_batch=self.metrics.batch_sizes.observe)
        self.static = {name: (resources.files("edge_infer") / "static" / name).read_bytes()
                       for name in _STATIC}
        # /info: the metadata as exported, minus provenance values that look like paths on the
        # training machine (its data folder, a home directory)
        self.info = {**classifier.info.to_dict(), "provenance": _without_paths(dict(classifier.info.provenance))}
        routes = [Route("/", self.page), Route("/static/{name}", self.asset),
                  Route("/predict", self.predict, methods=["POST"]), Route("/health", self.health),
                  Route("/info", self.info_route), Route("/metrics", self.metrics_route)]
        inner = Starlette(routes=routes, exception_handlers=exception_handlers(), lifespan=self._lifespan)
        # Outermost, the log and the counters, so that refusals (403, 411, 413) are counted too.
        guarded = SecurityHeaders(HostGuard(BodyLimit(inner, max_bytes), allow_hosts), _SECURITY_HEADERS)
        self.asgi: ASGIApp = _Logged(guarded, self.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    def drain(self) -> None:
        """Stop taking predictions: ``/health`` says 503 and queued work is answered 503."""
        if not self.batcher.closing:
            _log.info("draining: queued predictions get 503")
        self.batcher.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.batcher.shutdown()

    # -- routes ------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return Response(self.static["index.html"], media_type=_STATIC["index.html"])

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC or name == "index.html":  # exact names only; no paths
            raise HTTPException(404)
        return Response(self.static[name], media_type=_STATIC[name])

    async def health(self, request: Request) -> Response:
        if self.batcher.closing:
            return JSONResponse({"status": "stopping"}, status_code=503)
        return JSONResponse({"status": "ok", "queue": self.batcher.in_flight})

    async def info_route(self, request: Request) -> Response:
        return JSONResponse(self.info)

    async def metrics_route(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.text(), media_type=CONTENT_TYPE)

    async def predict(self, request: Request) -> Response:
        start = time.perf_counter()
        try:
            top_k = _top_k(request.query_params.get("top_k"), len(self.classifier.labels))
            length = request.headers.get("content-length", "0")
            with self.batcher.admit(int(length) if length.isdecimal() else 0):
                image = await self._decode_request(request)
                left = self.timeout - (time.perf_counter() - start)
                probs = await self._batch(image, left)
        except ImageError as e:  # a broken header, or pixels that fail to decode
            return self._refuse(Refused(400, str(e)))
        except Refused as e:
            return self._refuse(e)
        answer: dict[str, Any] = self.classifier.prediction(probs, top_k=top_k).to_dict()
        seconds = time.perf_counter() - start
        answer["ms"] = round(seconds * 1000.0, 2)
        self.metrics.latency.observe(seconds)
        return JSONResponse(answer)

    async def _decode_request(self, request: Request) -> preprocess.Probe:
        """The upload, read within the deadline (else 408), its header probed."""
        try:
            data, name = await asyncio.wait_for(_read_upload(request), self.timeout)
        except asyncio.TimeoutError:
            raise Refused(408, f"the body did not arrive within {self.timeout:g} s", kind="timeout") from None
        try:
            return preprocess.probe(data, name)
        except NotAnImage:
            raise Refused(415, f"{name}: not an image format this server can read "
                               "(JPEG, PNG, WebP, GIF, BMP, TIFF...)") from None

    async def _batch(self, image: preprocess.Probe, left: float) -> Any:
        """The probability row, within what is ``left`` of the deadline (else 503)."""
        try:
            return await asyncio.wait_for(self.batcher.probabilities(image), max(left, 0.0))
        except asyncio.TimeoutError:
            raise Refused(503, f"no answer within {self.timeout:g} s (the server is busy or the image "
                               "is very large); try again", retry_after=True, kind="timeout") from None

    def _refuse(self, e: Refused) -> Response:
        self.metrics.errors[e.kind] += 1
        headers = {"Retry-After": "1"} if e.retry_after else None
        return json_error(e.status, e.message, headers=headers)


class _Logged:
    """Counts every answer by route and status for ``/metrics``, and logs it (``logging``,
    logger ``edge_infer.serve``, INFO: method, path, status, milliseconds)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope.get("path", "")
            route = path if path in _ROUTE_NAMES else "other"
            self.metrics.requests[(scope.get("method", ""), route, status[0])] += 1
            _log.info("%s %s %d %.1f ms", scope.get("method", ""), path, status[0],
                      (time.perf_counter() - start) * 1000.0)


_ROUTE_NAMES = frozenset({"/", "/predict", "/health", "/info", "/metrics"}
                         | {f"/static/{name}" for name in _STATIC if name != "index.html"})


async def _read_upload(request: Request) -> tuple[bytes, str]:
    """The image bytes and how errors name them: a multipart ``file`` field (else the first
    file), or the raw body. ``BodyLimit`` has already bounded the body's size, so it is read
    whole before a form is parsed: a refused form (1M parts) is answered after its last byte,
    not reset under a client that sends everything before it reads."""
    ctype = request.headers.get("content-type")
    kind = ctype.split(";")[0].strip().lower() if ctype else None
    if not (kind is None or kind == "multipart/form-data" or kind.startswith("image/") or kind in RAW_TYPES):
        raise Refused(415, f"cannot classify a body of type {kind}: send multipart/form-data with a "
                           f"'{FORM_FIELD}' field (curl -F {FORM_FIELD}=@photo.jpg), or the image "
                           "bytes as image/* or application/octet-stream")
    try:
        data, name = await request.body(), "upload"
    except ClientDisconnect:
        raise Refused(400, "the client closed the connection mid-body") from None
    if kind == "multipart/form-data":
        data, name = await _form_file(request)  # parses the body just read
    if not data:
        raise Refused(400, f"{name}: empty upload; send an image")
    return data, name


async def _form_file(request: Request) -> tuple[bytes, str]:
    try:
        form = await request.form(max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS,
                                  max_part_size=64 * 1024)
    except (MultiPartException, HTTPException) as e:  # Starlette turns the first into the second
        detail = getattr(e, "detail", None) or getattr(e, "message", None) or str(e)
        raise Refused(400, f"malformed or oversized multipart/form-data: {detail}") from None
    except (AssertionError, KeyError, ValueError) as e:  # the parser's other ways of saying no
        raise Refused(400, f"malformed multipart/form-data ({e or type(e).__name__})") from None
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        chosen = form.get(FORM_FIELD)
        upload = chosen if isinstance(chosen, UploadFile) else (files[0] if files else None)
        if upload is None and not form:
            raise Refused(400, "malformed multipart/form-data: no complete part (a truncated upload, "
                               "or the wrong boundary?)")
        if upload is None:
            raise Refused(400, f"the form has no '{FORM_FIELD}' field and no file (fields: {list(form)})")
        return await upload.read(), upload.filename or FORM_FIELD
    finally:
        await form.close()


def _top_k(raw: str | None, n_labels: int) -> int:
    try:
        k = DEFAULT_TOP_K if raw is None else int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise Refused(400, f"top_k must be a whole number >= 1, got {raw!r}")
    return min(k, n_labels)


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if not _looks_like_path(v)}
    if isinstance(value, list):
        return [_without_paths(v) for v in value if not _looks_like_path(v)]
    return value


def _looks_like_path(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    windows_drive = len(value) > 2 and value[0].isalpha() and value[1:3] in (":\\", ":/")
    return value.startswith(("/", "~", "\\\\", "file:")) or windows_drive \
        or any(part in value for part in ("/home/", "/Users/", "\\Users\\", "/root/", "/tmp/"))


def create_app(classifier: Classifier, *, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = 10.0,
               batching: BatchConfig | None = None,
               allow_hosts: tuple[str, ...] = LOOPBACK_HOSTS) -> EdgeInferApp:
    """The ``edge-infer serve`` app for ``classifier``: run it with uvicorn, or mount it in your
    own Starlette/FastAPI service (``app.mount("/classify", create_app(clf))``).

    ``max_bytes`` bounds a request body; ``timeout`` bounds each prediction from its headers to
    its answer; ``batching`` sets the queue, batch size and decode memory (``BatchConfig``);
    ``allow_hosts`` are the Host/Origin names accepted besides loopback (``"*"``: any).
    """
    return EdgeInferApp(classifier, max_bytes=max_bytes, timeout=timeout,
                        batching=batching or BatchConfig(), allow_hosts=tuple(allow_hosts))

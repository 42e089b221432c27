"""``edge-infer serve``: a small HTTP server around one shared ``Classifier``.

Standard library only (``http.server``), so the wheel gains no dependency. Every request shares
one onnxruntime session (``InferenceSession.run`` is thread-safe). Decoding and inference run in
a fixed pool of worker threads, so the number of images being decoded at once is bounded however
many clients connect.

Routes: ``GET /`` the upload page; ``POST /predict`` a multipart ``file`` field or a raw image
body, ``?top_k=N``; ``GET /health``; ``GET /info`` the model's metadata. Everything but the page is
JSON, and every error is ``{"error": "..."}`` with a 4xx/5xx status, never a traceback.

Limits, each answered with its own status: a body over ``max_bytes`` is refused from its
Content-Length before a byte of it is read (413); a request must arrive and be answered within
``timeout`` seconds of its headers (408 while reading, 503 while predicting); the decoder's
pixel limit is the Classifier's ``max_pixels`` (400).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from PIL import Image, UnidentifiedImageError

from ._version import __version__
from .classifier import Classifier
from .errors import EdgeInferError, ImageError

__all__ = ["serve", "make_server", "EdgeInferServer", "DEFAULT_TOP_K"]

DEFAULT_TOP_K = 5
FORM_FIELD = "file"
RAW_TYPES = ("application/octet-stream",)  # plus image/*; no Content-Type at all counts as raw
# A rejected body is read and dropped for at most this long before the socket closes: closing
# with unread data makes the kernel send a reset, and the client would lose our answer.
DRAIN_SECONDS = 2.0

_STATIC = {  # file -> Content-Type; only these names are ever served
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}
_PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; "
     "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
)


@dataclass(frozen=True)
class Upload:
    """The image bytes of one request, and how error messages name them."""

    data: bytes
    name: str


class _Reject(Exception):
    """Answer the request with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class EdgeInferServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding the shared ``Classifier`` and the limits.

    Build it with ``make_server``; ``url`` is where it listens (port 0 picks a free port).
    """

    daemon_threads = True  # a stuck client never keeps the process alive at exit

    def __init__(self, address: tuple[str, int], classifier: Classifier, *, max_bytes: int,
                 timeout: float, workers: int, access_log: bool) -> None:
        self.classifier = classifier
        self.max_bytes = max_bytes
        self.request_timeout = timeout
        self.access_log = access_log
        self.static = _load_static()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edge-infer-predict")
        try:
            super().__init__(address, _Handler)
        except BaseException:
            self.pool.shutdown(wait=False)
            raise

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup that can hang offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def predict(self, upload: Upload, top_k: int, deadline: float) -> dict[str, Any]:
        """Classify in the worker pool; 503 when it does not finish by ``deadline``."""
        start = time.perf_counter()
        image = io.BytesIO(upload.data)
        image.name = upload.name  # type: ignore[attr-defined]  # how ImageError names it
        future = self.pool.submit(self.classifier.predict, image, top_k=top_k)
        try:
            prediction = future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except FutureTimeout:
            future.cancel()  # drops it if it is still queued; a running decode cannot be stopped
            raise _Reject(503, f"{upload.name}: no answer within {self.request_timeout:g} s (the "
                               "server is busy or the image is very large); try again",
                          headers=(("Retry-After", "1"),)) from None
        except ImageError as e:
            raise _Reject(400, str(e)) from None
        ms = (time.perf_counter() - start) * 1000.0
        return {**prediction.to_dict(), "ms": round(ms, 2)}

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Handler(BaseHTTPRequestHandler):
    server: EdgeInferServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries a Content-Length
    server_version = f"edge-infer/{__version__}"
    sys_version = ""  # do not advertise the Python version
    # Headers and body leave in two writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK of the headers.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # socket timeout: idle and slow clients
        self._unread = 0
        super().setup()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self._deadline = time.monotonic() + self.server.request_timeout
        url = urlsplit(self.path)
        path, query = url.path, url.query
        self._unread = self._declared_body()  # what must be read or drained before a reply
        try:
            route = _ROUTES.get(path)
            if route is None:
                raise _Reject(404, f"no route {path!r}; the routes are {sorted(_ROUTES)}")
            if method not in route:
                raise _Reject(405, f"{path} takes {' or '.join(route)}, not {method}",
                              headers=(("Allow", ", ".join(route)),))
            route[method](self, query)
        except _Reject as e:
            self._send_json(e.status, {"error": e.message}, headers=e.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away or stalled: nobody to answer
        except Exception:
            self.log_error("error in %s %s:\n%s", method, path, traceback.format_exc().rstrip())
            self._send_json(500, {"error": "internal server error; the details are in the server's log"})

    # -- routes ----------------------------------------------------------------------------------

    def _page(self, query: str) -> None:
        self._static("index.html")

    def _static(self, name: str) -> None:
        self._send(200, self.server.static[name], _STATIC[name], headers=_PAGE_HEADERS)

    def _health(self, query: str) -> None:
        self._send_json(200, {"status": "ok"})

    def _info(self, query: str) -> None:
        self._send_json(200, self.server.classifier.info.to_dict())

    def _predict(self, query: str) -> None:
        top_k = _top_k(query, len(self.server.classifier.labels))
        body = self._read_body(self._content_length())
        upload = self._upload(body)
        _sniff(upload)
        self._send_json(200, self.server.predict(upload, top_k, self._deadline))

    # -- reading the request ---------------------------------------------------------------------

    def _declared_body(self) -> int:
        """The body's length as announced: -1 for chunked or unparseable, 0 for none."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return -1
        raw = self.headers.get("Content-Length", "0")
        return int(raw) if raw.strip().isdigit() else -1

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _Reject(411, "chunked uploads are not supported; send a Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True  # an HTTP/1.0 client may be about to send until EOF
            raise _Reject(411, "a Content-Length header is required")
        try:
            n = int(raw)
            if n < 0:
                raise ValueError
        except ValueError:
            raise _Reject(400, f"invalid Content-Length {raw!r}") from None
        if n > self.server.max_bytes:
            raise _Reject(413, f"the body is {n:,} bytes, over this server's limit of "
                               f"{self.server.max_bytes:,} (edge-infer serve --max-bytes)")
        return n

    def _read_body(self, n: int) -> bytes:
        """Read exactly ``n`` bytes before the request's deadline (408 for a slow client)."""
        chunks = []
        self._unread = n
        while self._unread > 0:
            left = self._deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(self._unread, 1 << 16))
            except TimeoutError:
                self._unread = 0  # do not wait for the rest; the socket closes after the answer
                self.close_connection = True
                raise _Reject(408, f"the body did not arrive within {self.server.request_timeout:g} s "
                                   f"({n - sum(map(len, chunks)):,} of {n:,} bytes missing)") from None
            if not chunk:
                raise ConnectionError("the client closed the connection mid-body")
            chunks.append(chunk)
            self._unread -= len(chunk)
        self.connection.settimeout(self.timeout)
        return b"".join(chunks)

    def _upload(self, body: bytes) -> Upload:
        ctype = self.headers.get_content_type() if "Content-Type" in self.headers else None
        if ctype == "multipart/form-data":
            boundary = self.headers.get_param("boundary")
            if not isinstance(boundary, str) or not boundary:
                raise _Reject(400, "multipart/form-data without a boundary parameter")
            upload = _form_file(body, boundary)
        elif ctype is None or ctype.startswith("image/") or ctype in RAW_TYPES:
            upload = Upload(body, "upload")
        else:
            raise _Reject(415, f"cannot classify a body of type {ctype}: send multipart/form-data "
                               f"with a '{FORM_FIELD}' field (curl -F {FORM_FIELD}=@photo.jpg), or the "
                               "image bytes as image/* or application/octet-stream")
        if not upload.data:
            raise _Reject(400, f"{upload.name}: empty upload; send an image")
        return upload

    def handle_expect_100(self) -> bool:
        # curl asks before sending a big body: refuse an over-size one before it is sent.
        if self.command == "POST":
            try:
                self._content_length()
            except _Reject as e:
                self._unread = 0  # the client is waiting for us, not sending
                self._send_json(e.status, {"error": e.message}, close=True)
                return False
        return super().handle_expect_100()

    # -- writing the answer ----------------------------------------------------------------------

    def _send_json(self, status: int, obj: Any, *, headers: tuple[tuple[str, str], ...] = (),
                   close: bool = False) -> None:
        body = (json.dumps(obj) + "\n").encode()
        self._send(status, body, "application/json", headers=headers, close=close)

    def _send(self, status: int, body: bytes, content_type: str, *,
              headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> None:
        unread = self._unread
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in headers:
            self.send_header(key, value)
        if close or unread or status >= 500 or self.close_connection:
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if unread:
            self._drain(unread)

    def _drain(self, n: int) -> None:
        """Read and drop up to ``n`` unread body bytes (all, when -1), for ``DRAIN_SECONDS`` at most."""
        self._unread = 0
        deadline = time.monotonic() + min(DRAIN_SECONDS, self.server.request_timeout)
        left = n if n >= 0 else float("inf")
        with contextlib.suppress(OSError, ValueError):
            self.connection.shutdown(socket.SHUT_WR)  # the answer is complete: say so now
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.connection.settimeout(wait)
                chunk = self.rfile.read1(int(min(left, 1 << 16)))
                if not chunk:
                    break
                left -= len(chunk)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server answers malformed requests itself (400, 414, 431, 501) with an HTML page;
        # keep the promise that every error is JSON.
        text = message or HTTPStatus(code).phrase
        self._send_json(code, {"error": text}, close=True)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.access_log:
            super().log_request(code, size)


_Route = Callable[[_Handler, str], None]
_ROUTES: dict[str, dict[str, _Route]] = {
    "/": {"GET": _Handler._page},
    "/static/app.css": {"GET": lambda h, q: h._static("app.css")},
    "/static/app.js": {"GET": lambda h, q: h._static("app.js")},
    "/health": {"GET": _Handler._health},
    "/info": {"GET": _Handler._info},
    "/predict": {"POST": _Handler._predict},
}


def _top_k(query: str, n_labels: int) -> int:
    raw = parse_qs(query).get("top_k", [str(DEFAULT_TOP_K)])[-1]
    try:
        k = int(raw)
        if k < 1:
            raise ValueError
    except ValueError:
        raise _Reject(400, f"top_k must be a whole number >= 1, got {raw!r}") from None
    return min(k, n_labels)


def _sniff(upload: Upload) -> None:
    """415 for bytes in no image format Pillow knows; broken data in a known format is left to
    the Classifier, whose ``ImageError`` becomes a 400 that says what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(upload.data)).close()
    except UnidentifiedImageError:
        raise _Reject(415, f"{upload.name}: not an image format this server can read "
                           "(JPEG, PNG, WebP, GIF, BMP, TIFF...)") from None
    except Exception:  # a known format with a broken header: the Classifier says which
        pass


def _form_file(body: bytes, boundary: str, field: str = FORM_FIELD) -> Upload:
    """The file of a multipart/form-data body (RFC 7578): the part named ``field``, else the
    first part with a filename. Raises ``_Reject(400)`` for a malformed form."""
    if len(boundary) > 200:
        raise _Reject(400, "multipart boundary longer than 200 characters")
    # A boundary only counts at the start of a line, so split on CRLF + "--" + boundary.
    parts = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(parts) < 2:
        raise _Reject(400, "malformed multipart/form-data: the boundary never occurs in the body")
    found: list[tuple[Message, bytes]] = []
    for part in parts[1:]:
        if part.startswith(b"--"):
            break  # the close delimiter; what follows is the epilogue
        headers, content = _split_part(part)
        found.append((headers, content))
    else:
        raise _Reject(400, "malformed multipart/form-data: no closing boundary (truncated upload?)")
    named = [(h, c) for h, c in found if h.get_param("name", header="content-disposition") == field]
    with_file = [(h, c) for h, c in found if h.get_filename() is not None]
    if not (named or with_file):
        fields = [h.get_param("name", header="content-disposition") for h, _ in found]
        raise _Reject(400, f"the form has no '{field}' field and no file (fields: {fields})")
    headers, content = (named or with_file)[0]
    return Upload(content, headers.get_filename() or field)


def _split_part(part: bytes) -> tuple[Message, bytes]:
    line_end = part.find(b"\r\n")
    if line_end < 0 or part[:line_end].strip(b" \t"):
        raise _Reject(400, "malformed multipart/form-data: junk after a boundary")
    rest = part[line_end + 2:]
    if rest.startswith(b"\r\n"):  # a part with no headers
        head, content = b"", rest[2:]
    else:
        head, sep, content = rest.partition(b"\r\n\r\n")
        if not sep:
            raise _Reject(400, "malformed multipart/form-data: a part has no end of headers")
    # Browsers send non-ASCII filenames as raw UTF-8 inside the quotes.
    headers = HeaderParser().parsestr(head.decode("utf-8", "replace") + "\r\n\r\n", headersonly=True)
    return headers, content


def _load_static() -> dict[str, bytes]:
    folder = resources.files("edge_infer") / "static"
    return {name: (folder / name).read_bytes() for name in _STATIC}


def make_server(classifier: Classifier, *, host: str = "127.0.0.1", port: int = 0,
                max_bytes: int = 20_000_000, timeout: float = 10.0, workers: int | None = None,
                access_log: bool = True) -> EdgeInferServer:
    """A bound, not yet running, server for ``classifier``; run it with ``serve_forever()``.

    ``port=0`` picks a free port (see ``server.url``). ``workers`` bounds the images decoded and
    classified at once (default: one per core). ``access_log=False`` keeps stderr for errors only.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    workers = workers or os.cpu_count() or 1
    cls = _IPv6Server if ":" in host else EdgeInferServer
    return cls((host, port), classifier, max_bytes=max_bytes, timeout=timeout, workers=workers,
               access_log=access_log)


class _IPv6Server(EdgeInferServer):
    address_family = socket.AF_INET6


def serve(model_path: str, *, host: str = "127.0.0.1", port: int = 8000,
          max_bytes: int = 20_000_000, threads: int | None = None, timeout: float = 10.0) -> None:
    """Serve ``model_path`` over HTTP until SIGTERM or Ctrl-C, then close the socket and return.

    Binds 127.0.0.1 unless told otherwise: the server has no authentication. ``threads`` is
    onnxruntime's intra-op thread count; ``timeout`` bounds each request, from its headers to its
    answer; ``max_bytes`` bounds a request body.
    """
    clf = Classifier.load(model_path, threads=threads)
    try:
        server = make_server(clf, host=host, port=port, max_bytes=max_bytes, timeout=timeout)
    except OSError as e:  # port taken, address not on this machine, no permission...
        raise EdgeInferError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another "
                             "--host/--port (--port 0 picks a free port)") from None
    print(f"edge-infer: serving {clf.source} ({len(clf.labels)} labels) at {server.url}", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"edge-infer: listening on {host}: anyone who can reach this machine can use it "
              "(there is no authentication)", file=sys.stderr, flush=True)
    print("edge-infer: press Ctrl-C to stop", file=sys.stderr, flush=True)
    with _sigterm_as_interrupt():
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    print("edge-infer: stopped", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM stop ``serve_forever`` as Ctrl-C does, so both exit 0 through ``finally``."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

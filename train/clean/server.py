"""The cleaning page's server: the standard library's ``http.server``, on loopback only.

Routes (all JSON but the images and the page):

* ``GET /`` and ``GET /static/<file>``: the page (``static/``: plain HTML, CSS and JS);
* ``GET /api/items``: the run's images, highest loss first (``ranking.load_items``);
* ``GET /api/dupes``: duplicate groups; computed in a background thread at start-up, so the
  answer may be ``{"state": "running", "done": 120, "total": 900}`` for a while;
* ``GET /thumb?path=REL`` (a JPEG at most 256 px) and ``GET /image?path=REL`` (the file as is):
  only images under the data folder (``ranking.data_path`` refuses ``..``, absolute paths,
  hidden folders and symlinks that lead out);
* ``POST /api/apply`` with ``{"decisions": [{"path", "action", "label"}]}``: all checked, then
  carried out (``decisions.apply_decisions``).

The page moves the user's files, so it is guarded against other web pages: requests must carry
``Host: 127.0.0.1:PORT`` (or ``localhost``; against DNS rebinding), and ``POST`` must be JSON from
the page's own origin (a cross-site form cannot send ``application/json`` without a CORS
preflight, which this server never grants).
"""

from __future__ import annotations

import io
import ipaddress
import json
import mimetypes
import shlex
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from edge_infer.errors import ImageError
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import load_image

from . import dupes
from .decisions import Decision, apply_decisions
from .journal import Journal
from .ranking import CleanError, Run, current_items, data_path, load_items

__all__ = ["CleanApp", "make_server", "serve"]

STATIC = Path(__file__).parent / "static"
THUMB = 256
MAX_BODY = 16 << 20
_THUMB_DRAFT = Preprocess(size=(THUMB, THUMB), resize="pad", pad_mode="zeros")  # zeros: lets JPEGs draft-decode
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class CleanApp:
    """The state behind the page: the run, the duplicate scan, one apply at a time."""

    def __init__(self, run: Run, *, top: int | None = None):
        self.run, self.top = run, top
        self.apply_lock = threading.Lock()
        self._cache: dict = {}
        self._dupes: dict = {"state": "idle"}
        self._generation = 0
        self.undo_command = f"python -m train clean {shlex.quote(str(run.folder))} --undo"

    def items(self) -> dict:
        items = load_items(self.run, top=self.top)
        return {"run": str(self.run.folder), "data": str(self.run.data), "layout": self.run.layout,
                "labels": list(self.run.labels), "top": self.top,
                "items": [it.to_dict() for it in items],
                "journal": str(Journal(self.run.data).path),
                "pending": len(Journal(self.run.data).pending()), "undo": self.undo_command}

    def dupes(self) -> dict:
        return dict(self._dupes)

    def scan_dupes(self) -> threading.Thread:
        """(Re)start the duplicate scan in the background; a newer scan wins."""
        self._generation += 1
        generation = self._generation
        thread = threading.Thread(target=self._scan, args=(generation,), daemon=True,
                                  name="clean-dupes")
        thread.start()
        return thread

    def _scan(self, generation: int) -> None:
        try:
            now = current_items(self.run)[0]
            paths = sorted(now)
            self._dupes = {"state": "running", "done": 0, "total": len(paths)}

            def progress(n: int) -> None:
                if generation == self._generation:
                    self._dupes = {"state": "running", "done": n, "total": len(paths)}

            prints = dupes.scan(self.run.data, paths, cache=self._cache, progress=progress)
            groups = dupes.groups(prints)
            broken = dupes.unreadable(prints)
            for member in [m for g in groups for m in g["items"]] + broken:
                member["label"] = now[member["path"]].label  # --top may leave it off the list
            result = {"state": "done", "total": len(paths), "groups": groups,
                      "unreadable": broken, "near_bits": dupes.NEAR_BITS,
                      "colour_tolerance": dupes.COLOUR_TOLERANCE}
        except Exception as e:  # shown on the page rather than lost in a thread
            traceback.print_exc()
            result = {"state": "failed", "error": f"{type(e).__name__}: {e}"}
        if generation == self._generation:
            self._dupes = result

    def apply(self, body: object) -> dict:
        decisions = _decisions_from_json(body)
        with self.apply_lock:
            report = apply_decisions(self.run, decisions)
        self.scan_dupes()
        return {"relabelled": report.relabelled, "deleted": report.deleted,
                "summary": report.summary(), "journal": str(report.journal),
                "undo": self.undo_command}


def _decisions_from_json(body: object) -> list[Decision]:
    rows = body.get("decisions") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise CleanError('expected {"decisions": [{"path": ..., "action": ..., "label": ...}]}')
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise CleanError(f"decision {n}: expected an object with a string path")
        label = row.get("label")
        out.append(Decision(path=row["path"], action=str(row.get("action", "")).lower(),
                            label=str(label) if label else None))
    return out


class Handler(BaseHTTPRequestHandler):
    server_version = "edge-infer-clean"
    protocol_version = "HTTP/1.1"
    server: "CleanServer"

    # -- routing -----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        route = {"/": lambda: self._static("index.html"),
                 "/api/items": lambda: self._json(self.server.app.items()),
                 "/api/dupes": lambda: self._json(self.server.app.dupes()),
                 "/favicon.ico": lambda: self._send(HTTPStatus.NO_CONTENT, b"", None, {}),
                 "/thumb": lambda: self._image(query, thumbnail=True),
                 "/image": lambda: self._image(query, thumbnail=False)}.get(url.path)
        if route is None and url.path.startswith("/static/"):
            route = lambda: self._static(url.path.removeprefix("/static/"))  # noqa: E731
        if route is None:
            return self._error(HTTPStatus.NOT_FOUND, f"{url.path}: no such page")
        try:
            route()
        except CleanError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True  # the body stays unread: this connection is done
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too many decisions at once")
        raw = self.rfile.read(length)  # read first, so a refusal leaves the connection clean
        if not self._host_ok():
            return
        if urlsplit(self.path).path != "/api/apply":
            return self._error(HTTPStatus.NOT_FOUND, f"{self.path}: no such endpoint")
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host')}":
            return self._error(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin} refused")
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            return self._error(HTTPStatus.BAD_REQUEST, f"not JSON ({e})")
        try:
            self._json(self.server.app.apply(body))
        except (CleanError, OSError) as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))

    # -- answers -----------------------------------------------------------------------------
    def _host_ok(self) -> bool:
        if self.headers.get("Host") in self.server.allowed_hosts:
            return True
        self._error(HTTPStatus.FORBIDDEN, f"unexpected Host header {self.headers.get('Host')!r}")
        return False

    def _static(self, name: str) -> None:
        if name not in {p.name for p in STATIC.iterdir() if p.is_file()}:
            return self._error(HTTPStatus.NOT_FOUND, f"{name}: no such file")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), ctype, {"Cache-Control": "no-cache"})

    def _image(self, query: dict, *, thumbnail: bool) -> None:
        rel = (query.get("path") or [""])[0]
        try:
            path = data_path(self.server.app.run.data, rel)
        except CleanError as e:
            return self._error(HTTPStatus.FORBIDDEN, str(e))
        if not path.is_file():
            return self._error(HTTPStatus.NOT_FOUND, f"{rel}: no such image")
        st = path.stat()
        etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{int(thumbnail)}"'
        cache = {"ETag": etag, "Cache-Control": "no-cache"}
        if self.headers.get("If-None-Match") == etag:
            return self._send(HTTPStatus.NOT_MODIFIED, b"", None, cache)
        if not thumbnail:
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return self._send(HTTPStatus.OK, path.read_bytes(), ctype, cache)
        try:
            img = load_image(path, draft_for=_THUMB_DRAFT)
        except ImageError as e:
            return self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))
        img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        self._send(HTTPStatus.OK, buf.getvalue(), "image/jpeg", cache)

    def _json(self, payload: object) -> None:
        self._send(HTTPStatus.OK, json.dumps(payload).encode(), "application/json",
                   {"Cache-Control": "no-store"})

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json", {})

    def _send(self, status: HTTPStatus, body: bytes, ctype: str | None, headers: dict) -> None:
        self.send_response(status)
        for k, v in {**_SECURITY_HEADERS, **headers}.items():
            self.send_header(k, v)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status != HTTPStatus.NOT_MODIFIED:
            self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:
        if not str(code).startswith(("2", "3")):  # thumbnails would flood the terminal
            super().log_request(code, size)


class CleanServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: CleanApp):
        super().__init__(address, Handler)
        self.app = app
        port = self.server_address[1]
        self.url = f"http://{_url_host(address[0])}:{port}/"
        self.allowed_hosts = {f"{h}:{port}" for h in
                              ("127.0.0.1", "localhost", "[::1]", _url_host(address[0]))}


class CleanServer6(CleanServer):
    address_family = socket.AF_INET6


def make_server(run: Run, *, host: str = "127.0.0.1", port: int = 0,
                top: int | None = None) -> CleanServer:
    """A server bound to ``host:port`` (0: a free port), duplicate scan started; call
    ``serve_forever()`` on it (``serve`` does, printing the URL)."""
    host = _loopback(host)
    app = CleanApp(run, top=top)
    cls = CleanServer6 if ":" in host else CleanServer
    server = cls((host, port), app)
    app.scan_dupes()
    return server


def serve(run: Run, *, host: str = "127.0.0.1", port: int = 0, top: int | None = None) -> None:
    server = make_server(run, host=host, port=port, top=top)
    print(f"clean: {server.url}  (data: {run.data}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("clean: stopped", file=sys.stderr)
    finally:
        server.server_close()


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

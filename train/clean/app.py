"""The cleaning page as an ASGI app (Starlette); ``server.py`` runs it with uvicorn on loopback.

The page (``/``, ``/static/``: plain HTML, CSS and JS) reads the run's images highest loss first
from ``/api/items`` (``ranking.load_items``) and the duplicate groups from ``/api/dupes``, which
a background scan fills (``{"state": "running", "done": 120, "total": 900}`` for a while).
``/thumb?path=REL`` (a JPEG at most 256 px) and ``/image?path=REL`` serve only images under the
data folder (``ranking.data_path``); ``POST /api/apply`` with ``{"decisions": [{"path",
"action", "label"}]}`` checks them all, then carries them out (``decisions.apply_decisions``).

The page moves the user's files, so it is guarded against other web pages. ``HostGuard`` (shared
with ``edge-infer serve``) answers 403 unless ``Host`` names a loopback address (against DNS
rebinding) and any ``Origin`` does too; ``apply`` goes further and takes only JSON from the
page's own origin, port included (another local web app is another page), and a cross-site form
cannot send ``application/json`` without a CORS preflight, which this app never grants.
``BodyLimit`` refuses a body over ``MAX_BODY`` before reading it, and chunked bodies; the rest
of the body must arrive within ``body_timeout`` seconds. Every error is ``{"error": "..."}``.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import shlex
import threading
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import anyio
import anyio.to_thread
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge_infer.errors import ImageError
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import load_image
from edge_infer.serve.guard import LOOPBACK_HOSTS, BodyLimit, HostGuard, SecurityHeaders, exception_handlers, json_error
from export.run_folder import RunFolder

from ..quarantine import Journal
from . import dupes
from .decisions import Decision, apply_decisions
from .ranking import CleanError, current_items, data_path, load_items

__all__ = ["CleanApp", "MAX_BODY", "MAX_DECISIONS", "create_app"]

STATIC = Path(__file__).parent / "static"
THUMB = 256
MAX_DECISIONS = 10_000  # each is checked against the file system: about 5 s on a slow machine
MAX_BODY = 2 << 20  # 10,000 decisions of long paths; refused before it is read
_THUMB_DRAFT = Preprocess(size=(THUMB, THUMB), resize="pad", pad_mode="zeros")  # zeros: lets JPEGs draft-decode
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self'; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class CleanApp:
    """The state behind the page: the run, the duplicate scan, one apply at a time."""

    def __init__(self, run: RunFolder, *, top: int | None = None):
        self.run, self.top = run, top
        self.apply_lock = threading.Lock()
        self._cache: dict = {}
        self._dupes: dict = {"state": "idle"}
        self._generation = 0
        self.undo_command = f"python -m train clean {shlex.quote(str(run.folder))} --undo"

    def items(self) -> dict:
        items = load_items(self.run, top=self.top)
        journal = Journal(self.run.data)
        text = journal.read()
        return {"run": str(self.run.folder), "data": str(self.run.data), "layout": self.run.layout,
                "labels": list(self.run.labels), "top": self.top,
                "items": [asdict(it) for it in items], "journal": str(journal.path),
                "pending": len(journal.pending(text.records)), "journal_damaged": text.damaged,
                "undo": self.undo_command}

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
    if len(rows) > MAX_DECISIONS:
        raise CleanError(f"{len(rows):,} decisions at once; the page applies at most "
                         f"{MAX_DECISIONS:,}: apply in parts, or use --export and --apply")
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise CleanError(f"decision {n}: expected an object with a string path")
        label = row.get("label")
        out.append(Decision(path=row["path"], action=str(row.get("action", "")).lower(),
                            label=str(label) if label else None))
    return out


# -- routes ---------------------------------------------------------------------------------------
def create_app(state: CleanApp, *, body_timeout: float = 10.0,
               hosts: Sequence[str] = LOOPBACK_HOSTS) -> SecurityHeaders:
    """The page's ASGI app over ``state``, wrapped in the host and body guards; ``hosts``: the
    names a request's Host may give (the loopback names, and the address served on)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def items(request: Request) -> Response:
        return _json(await run_in_threadpool(state.items))

    async def dupes_(request: Request) -> Response:
        return _json(state.dupes())

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    # Bounds on memory: a thumbnail decodes a whole image, and an apply body is up to MAX_BODY
    # bytes plus its parsed objects. Decisions are carried out one apply at a time anyway.
    decodes = anyio.CapacityLimiter(os.cpu_count() or 2)
    receiving = anyio.CapacityLimiter(1)

    async def thumb(request: Request) -> Response:
        return await anyio.to_thread.run_sync(_image, state.run.data, request, True, limiter=decodes)

    async def image(request: Request) -> Response:
        return await run_in_threadpool(_image, state.run.data, request, False)

    async def apply(request: Request) -> Response:
        refusal = _not_from_the_page(request)
        if refusal is not None:
            return refusal
        try:
            with anyio.fail_after(body_timeout):  # waiting for another upload counts too
                async with receiving:
                    raw = await request.body()
        except TimeoutError:
            return json_error(408, f"the body did not arrive within {body_timeout:g} s",
                              headers={"connection": "close"})  # the rest is not wanted
        try:
            body = await run_in_threadpool(json.loads, raw or b"null")
        except ValueError as e:
            return json_error(400, f"not JSON ({e})")
        return _json(await run_in_threadpool(state.apply, body))

    app = Starlette(routes=[
        Route("/", index), Route("/api/items", items), Route("/api/dupes", dupes_),
        Route("/favicon.ico", favicon), Route("/thumb", thumb), Route("/image", image),
        Route("/api/apply", apply, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], exception_handlers={**exception_handlers(), CleanError: _clean_error, OSError: _clean_error})
    return SecurityHeaders(HostGuard(BodyLimit(app, MAX_BODY), hosts), SECURITY_HEADERS)


def _not_from_the_page(request: Request) -> Response | None:
    """Why ``apply`` refuses this request, or None: it must be JSON from the page's own origin
    (HostGuard lets any loopback origin through, but another local web app is another page)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"http://{request.headers.get('host')}":
        return json_error(403, f"cross-origin request from {origin} refused")
    if not request.headers.get("content-type", "").startswith("application/json"):
        return json_error(415, "send application/json")
    return None


def _image(data: Path, request: Request, thumbnail: bool) -> Response:
    rel = request.query_params.get("path", "")
    try:
        path = data_path(data, rel)
    except CleanError as e:
        return json_error(403, str(e))
    if not path.is_file():
        return json_error(404, f"{rel}: no such image")
    st = path.stat()
    etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{int(thumbnail)}"'
    cache = {"etag": etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=cache)
    if not thumbnail:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=ctype, headers=cache, stat_result=st)
    try:
        img = load_image(path, draft_for=_THUMB_DRAFT)
    except ImageError as e:
        return json_error(422, str(e))
    img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return Response(buf.getvalue(), media_type="image/jpeg", headers=cache)


def _json(payload: object) -> Response:
    return JSONResponse(payload, headers={"cache-control": "no-store"})


async def _clean_error(request: Request, exc: Exception) -> Response:
    """A refused decision or a file that could not move: the user's problem, said in one line."""
    if isinstance(exc, OSError):
        return json_error(400, f"{exc.filename or request.url.path}: {exc.strerror or exc}")
    return json_error(400, str(exc))

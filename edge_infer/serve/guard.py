"""Guards shared by the two pages (``edge-infer serve`` and ``python -m train clean``).

Both servers listen on loopback with no authentication, so the threat is another web page the
user has open: it can POST a multipart form to ``http://127.0.0.1:PORT`` without a CORS
preflight, and a DNS-rebinding page can even read the answers. ``HostGuard`` refuses both: the
``Host`` header must name an allowed host (rebinding sends the attacker's name), and an
``Origin`` header, when a browser sends one, must too.

``SecurityHeaders`` adds each page's Content-Security-Policy (and nosniff, no referrer) to every
answer, errors included. ``BodyLimit`` refuses an oversize body from its ``Content-Length``
before a byte of it is read, and a body without one (chunked), which could grow without bound.

Every refusal, here or in the apps (``json_error``, ``exception_handlers``), is
``{"error": "one line"}`` as JSON with a 4xx status, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "LOOPBACK_HOSTS", "HostGuard", "BodyLimit", "SecurityHeaders", "allowed_hosts", "host_name",
    "send_json_error", "json_error", "exception_handlers",
]

LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
DRAIN_SECONDS = 2.0  # see send_json_error
ANY_HOST = "*"  # in an allow-list: accept every Host (behind a proxy that checks it itself)
_log = logging.getLogger("edge_infer.serve")


def host_name(value: str) -> str:
    """The host of a ``Host`` header or a ``--allow-host`` value, without port or brackets,
    lower-case: ``"[::1]:8000"`` -> ``"::1"``, ``"LocalHost.:80"`` -> ``"localhost"``."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port (a bare v6 address has several colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def allowed_hosts(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The loopback names plus ``extra`` (``--allow-host`` values), normalised by ``host_name``."""
    names = list(LOOPBACK_HOSTS) + [ANY_HOST if h.strip() == ANY_HOST else host_name(h) for h in extra]
    return tuple(dict.fromkeys(n for n in names if n))


async def send_json_error(send: Send, status: int, message: str, *,
                          drain: Receive | None = None) -> None:
    """Answer an HTTP scope with ``json_error`` (pure ASGI) and close the connection.

    ``drain``: the request's ``receive``, when its body is still arriving. The answer is sent
    first, then up to ``DRAIN_SECONDS`` of body is read and dropped before the socket closes:
    closing with unread data makes the kernel send a reset, and a client that sends its whole
    body before reading (urllib, many scripts) would lose the answer.
    """
    answer = json_error(status, message, headers={"cache-control": "no-store", "connection": "close",
                                                  "x-content-type-options": "nosniff"})
    await send({"type": "http.response.start", "status": status, "headers": answer.raw_headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": drain is not None})
    if drain is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_read_to_end(drain), DRAIN_SECONDS)
        await send({"type": "http.response.body", "body": b""})


async def _read_to_end(receive: Receive) -> None:
    while (await receive()).get("more_body", False):
        pass


class HostGuard:
    """403 unless ``Host`` (and ``Origin``, when present) names one of ``hosts``.

    ``hosts`` defaults to the loopback names; ``"*"`` in it accepts any Host and any Origin (for
    a reverse proxy that checks them itself). Non-HTTP scopes (lifespan) pass through.
    """

    def __init__(self, app: ASGIApp, hosts: Sequence[str] = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.hosts = frozenset(allowed_hosts(hosts))
        self.any_host = ANY_HOST in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = scope["type"] in ("http", "websocket") and not self.any_host
        problem = self.refusal(Headers(scope=scope)) if checked else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        _log.warning("refused %s %s: %s", scope.get("method", ""), scope.get("path", ""), problem)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_json_error(send, 403, problem)

    def refusal(self, headers: Headers) -> str | None:
        """Why a request with these headers is refused, or ``None`` when it is allowed."""
        host = headers.get("host")
        if host is None:
            return "a Host header is required"
        name = host_name(host)
        if name not in self.hosts:
            return (f"Host {name!r} is not allowed (allowed: {', '.join(sorted(self.hosts))}; "
                    "add it with --allow-host)")
        origin = headers.get("origin")
        if origin is not None:
            origin_host = urlsplit(origin).hostname if "://" in origin else None  # "null" has none
            if origin_host is None or host_name(origin_host) not in self.hosts:
                return f"requests from the web page at {origin!r} are not allowed"
        return None


class BodyLimit:
    """413 for a ``Content-Length`` over ``max_bytes``, before the body is read; 411 for a
    body without a length (chunked), which could grow without bound."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        # A client that asked "Expect: 100-continue" has not sent its body: nothing to drain
        # (and reading would make the server tell it to go ahead).
        drain = None if "100-continue" in headers.get("expect", "").lower() else receive
        if length is None and "chunked" in headers.get("transfer-encoding", "").lower():
            await send_json_error(send, 411, "chunked uploads are not supported; send a Content-Length",
                                  drain=drain)
            return
        # The HTTP parser (h11/httptools) has already refused lengths that are not plain digits.
        if length is not None and length.isdecimal() and int(length) > self.max_bytes:
            await send_json_error(send, 413, f"the body is {int(length):,} bytes, over this "
                                             f"server's limit of {self.max_bytes:,} (--max-bytes)",
                                  drain=drain)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds ``headers`` (a page's CSP, nosniff, no referrer...) to every answer, errors
    included, where the answer does not set that header itself."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def json_error(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": message}``, the body of every refusal of these servers."""
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def exception_handlers() -> dict[Any, Callable[..., Awaitable[JSONResponse]]]:
    """``Starlette(exception_handlers=...)``: HTTP errors (404, 405...) as JSON, and any other
    exception as a logged 500 whose body holds no traceback."""

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail
        if exc.status_code == 404:
            message = f"no route {request.url.path!r}"
        elif exc.status_code == 405:
            message = f"{request.url.path} does not take {request.method}"
        return json_error(exc.status_code, str(message), headers=exc.headers)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        _log.error("error in %s %s", request.method, request.url.path, exc_info=exc)
        return json_error(500, "internal server error; the details are in the server's log")

    return {HTTPException: http_error, Exception: internal_error}

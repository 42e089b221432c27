"""``edge_infer.serve.guard`` over real HTTP on 127.0.0.1: Host/Origin allow-list and body limits.

The guard is what keeps another web page the user has open (or a DNS-rebinding one) from
using the servers; both ``edge-infer serve`` and the clean page sit behind it.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from asgi_server import running
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge_infer.serve.guard import BodyLimit, HostGuard, allowed_hosts, exception_handlers, host_name


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("secret detail")


def app(hosts: tuple[str, ...] = (), max_bytes: int = 1000):
    inner = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/boom", boom)],
                      exception_handlers=exception_handlers())
    return HostGuard(BodyLimit(inner, max_bytes), hosts)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running(app(hosts=("photos.example",))) as base:
        yield base


def call(url: str, method: str = "GET", path: str = "/echo", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST.:1", "[::1]:80",
                                  "photos.example", "Photos.Example:443"])
def test_allowed_hosts_pass(url, host):
    assert call(url, headers={"Host": host})[:2] == (200, {"bytes": 0})


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil:80",
                                  "[::2]:80", "photos.example.evil"])
def test_other_hosts_get_403(url, host):
    status, answer, response = call(url, headers={"Host": host})
    assert status == 403 and "is not allowed" in answer["error"] and "--allow-host" in answer["error"]
    assert response.getheader("Content-Type") == "application/json"


@pytest.mark.parametrize("origin, ok", [
    ("http://127.0.0.1:8000", True), ("http://localhost:5173", True), ("http://[::1]:8000", True),
    ("https://photos.example", True),
    ("https://evil.example", False), ("null", False), ("http://127.0.0.1.evil.example", False),
])
def test_origin_must_be_allowed_too(url, origin, ok):
    """A cross-site form POST needs no CORS preflight: the Origin header is what gives it away."""
    status, answer, _ = call(url, "POST", body=b"x" * 10, headers={"Host": "127.0.0.1", "Origin": origin})
    if ok:
        assert (status, answer) == (200, {"bytes": 10})
    else:
        assert status == 403 and "not allowed" in answer["error"]


def test_a_request_without_host_is_refused(url):
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.1 403 ")
    assert b"a Host header is required" in reply


def test_star_allows_any_host():
    with running(app(hosts=("*",))) as base:
        assert call(base, headers={"Host": "anything.example", "Origin": "https://x.example"})[0] == 200


def test_oversize_body_is_refused_before_it_is_read(url):
    """413 arrives although not one byte of the body was sent."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", "/echo")
        conn.putheader("Content-Length", "1001")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "1,001 bytes" in json.loads(response.read())["error"]
    finally:
        conn.close()


def test_chunked_body_is_refused(url):
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n")
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.1 411 ")


def test_errors_are_json_without_traceback(url):
    status, answer, _ = call(url, path="/nope")
    assert (status, answer) == (404, {"error": "no route '/nope'"})
    status, answer, _ = call(url, "DELETE")
    assert status == 405 and "DELETE" in answer["error"]
    status, answer, _ = call(url, path="/boom")
    assert status == 500 and "secret" not in answer["error"] and "log" in answer["error"]


@pytest.mark.parametrize("raw, name", [("[::1]:8000", "::1"), ("::1", "::1"), ("LocalHost.:80", "localhost"),
                                       ("example.com", "example.com")])
def test_host_name(raw, name):
    assert host_name(raw) == name


def test_allowed_hosts_keeps_loopback_first():
    assert allowed_hosts(["Example.com:8000", "*"]) == ("127.0.0.1", "localhost", "::1", "example.com", "*")

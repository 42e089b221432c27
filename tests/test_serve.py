"""``edge-infer serve`` over real HTTP on 127.0.0.1: uvicorn in a thread, real sockets.

The tiny colour model makes every answer checkable: a red image must come back "red". The
attacks of issue 13 each have a bounded regression test here (``-- attacks --``).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np
import onnx
import pytest
import tiny_models
from asgi_server import gated, running, wait_until
from onnx import TensorProto, helper
from PIL import Image

from edge_infer import Classifier, EdgeInferError
from edge_infer.serve import DEFAULT_TOP_K, BatchConfig, ServerLimits, create_app, serve

MAX_BYTES = 100_000
TIMEOUT = 5.0
BOUNDARY = "----edge-infer-test-7MA4YWxkTrZu0gW"


# -- helpers -------------------------------------------------------------------------------------

def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port  # type: ignore[return-value]


def request(url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
    """One request; the JSON answer is parsed (every answer but the page and /metrics is JSON)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(*address(url), timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        if own:
            conn.close()
    if response.getheader("Content-Type") == "application/json":
        return response.status, json.loads(raw), response
    return response.status, {"_text": raw.decode()}, response


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = BOUNDARY) -> tuple[bytes, dict]:
    """Encode (name, filename, content) parts as a browser does."""
    out = io.BytesIO()
    for name, filename, content in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if filename is not None:
            out.write(b"Content-Type: application/octet-stream\r\n")
        out.write(b"\r\n" + content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def encode(array, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def big_png(size: int, colour=(0, 0, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def raw_exchange(url: str, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` as is and read until the server closes (or ``timeout``)."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def json_body(reply: bytes) -> dict:
    return json.loads(reply.partition(b"\r\n\r\n")[2])


def failing_model(path: Path) -> Path:
    """A model that loads (its signature matches its metadata) but fails in onnxruntime at run
    time: it reshapes every 32x32 image to 7x7, a real bug a server must survive."""
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
        helper.make_node("ReduceMean", ["y", "axes"], ["mean"], keepdims=0),
        helper.make_node("Softmax", ["mean"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "broken",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [4], [1, 7, 7, 3]),
                     helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return tiny_models.save(model, path, tiny_models.colour_info())


def assert_json_error(status: int, answer: dict, expected_status: int, *words: str) -> None:
    assert status == expected_status, answer
    assert set(answer) == {"error"}, answer
    assert "Traceback" not in answer["error"]
    for word in words:
        assert word in answer["error"], answer["error"]


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(colour_model) -> Classifier:
    return Classifier.load(colour_model, threads=1)


@pytest.fixture(scope="module")
def server(classifier) -> Iterator[str]:
    app = create_app(classifier, max_bytes=MAX_BYTES, timeout=TIMEOUT,
                     batching=BatchConfig(decode_workers=2))
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def images(colour_images) -> dict[str, bytes]:
    return {colour: path.read_bytes() for colour, path in colour_images.items()}


# -- answers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("colour", tiny_models.COLOURS)
@pytest.mark.parametrize("encoding", ["multipart", "raw-jpeg", "raw-octet-stream", "raw-no-type"])
def test_predict_returns_the_colour(server, images, colour, encoding):
    data = images[colour]
    if encoding == "multipart":
        body, headers = multipart([("file", f"{colour}.jpg", data)])
    else:
        body = data
        headers = {"raw-jpeg": {"Content-Type": "image/jpeg"},
                   "raw-octet-stream": {"Content-Type": "application/octet-stream"},
                   "raw-no-type": {}}[encoding]
    status, answer, _ = request(server, "POST", "/predict", body, headers)
    assert status == 200, answer
    assert answer["label"] == colour
    assert answer["index"] == tiny_models.COLOURS.index(colour)
    assert answer["score"] > 0.99
    assert len(answer["top_k"]) == min(DEFAULT_TOP_K, 3)
    assert answer["top_k"][0] == [colour, answer["score"]]
    assert sum(p for _, p in answer["top_k"]) == pytest.approx(1.0, abs=1e-5)
    assert isinstance(answer["ms"], float) and answer["ms"] >= 0


@pytest.mark.parametrize("query, expected", [("?top_k=1", 1), ("?top_k=2", 2), ("?top_k=50", 3)])
def test_top_k_query(server, images, query, expected):
    status, answer, _ = request(server, "POST", "/predict" + query, images["blue"],
                                {"Content-Type": "image/jpeg"})
    assert status == 200
    assert [label for label, _ in answer["top_k"]][:1] == ["blue"]
    assert len(answer["top_k"]) == expected


def test_multipart_picks_the_file_field_among_others(server, images):
    body, headers = multipart([("note", None, b"mid-line, --" + BOUNDARY.encode() + b" is no boundary"),
                               ("file", "g\u00e9ant vert.png", encode(tiny_models.solid("green")))])
    status, answer, _ = request(server, "POST", "/predict", body, headers)
    assert (status, answer["label"]) == (200, "green")


def test_health_says_ready(server):
    status, answer, _ = request(server, "GET", "/health")
    assert status == 200 and answer["status"] == "ok"


def test_info_is_the_model_metadata(server, classifier):
    status, info, _ = request(server, "GET", "/info")
    assert status == 200
    assert info == json.loads(json.dumps(classifier.info.to_dict()))
    assert info["labels"] == list(tiny_models.COLOURS)


def test_info_leaves_out_machine_paths(tmp_path):
    """Provenance can hold the training machine's folders; /info must not hand them out."""
    info = tiny_models.colour_info()
    provenance = {"arch": "tiny", "run": "bears-01", "data": "/home/ana/photos/bears",
                  "options": {"path": "/srv/datasets/bears", "epochs": 3, "cache": "C:\\Users\\ana\\x"},
                  "files": ["~/notes.txt", "labels.csv"]}
    model = tiny_models.save(tiny_models.colour_graph(), tmp_path / "m.onnx", info.replace(provenance=provenance))
    with running(create_app(Classifier.load(model, threads=1))) as url:
        status, answer, _ = request(url, "GET", "/info")
    assert status == 200
    assert answer["provenance"] == {"arch": "tiny", "run": "bears-01", "options": {"epochs": 3},
                                    "files": ["labels.csv"]}
    assert answer["labels"] == list(tiny_models.COLOURS)


@pytest.mark.parametrize("path, content_type, needle", [
    ("/", "text/html; charset=utf-8", 'id="file"'),
    ("/static/app.js", "text/javascript; charset=utf-8", "predict"),
    ("/static/app.css", "text/css; charset=utf-8", ".drop"),
])
def test_page_and_its_assets(server, path, content_type, needle):
    status, answer, response = request(server, "GET", path)
    assert status == 200
    assert response.getheader("Content-Type") == content_type
    assert needle in answer["_text"]
    assert "default-src 'self'" in response.getheader("Content-Security-Policy")


def test_the_page_loads_nothing_from_elsewhere(server):
    text = "".join(request(server, "GET", path)[1]["_text"]
                   for path in ("/", "/static/app.js", "/static/app.css"))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", text)
    # relative URLs, so the page also works where the app is mounted under a prefix
    assert 'fetch("info")' in text and "fetch(`predict" in text


def test_concurrent_clients_get_their_own_answers(server, images):
    """8 clients x 25 requests, each on its own keep-alive connection, colours interleaved:
    batched together, every answer still goes to the right client."""
    def client(i: int) -> list[tuple[int, str, str]]:
        conn = http.client.HTTPConnection(*address(server), timeout=30)
        out = []
        try:
            for j in range(25):
                colour = tiny_models.COLOURS[(i + j) % 3]
                status, answer, _ = request(server, "POST", "/predict", images[colour],
                                            {"Content-Type": "image/jpeg"}, conn=conn)
                out.append((status, colour, answer.get("label")))
        finally:
            conn.close()
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(client, range(8)) for r in rs]
    assert len(results) == 200
    assert [r for r in results if r[0] != 200 or r[1] != r[2]] == []


def test_concurrent_uploads_are_batched(classifier, images):
    """16 uploads at once, max batch 8 and a window that never closes first: each batch runs
    when 8 are queued, so the model runs exactly twice, however fast this CPU decodes."""
    app = create_app(classifier, timeout=60, batching=BatchConfig(max_batch=8, max_wait_ms=60_000))
    with running(app) as url:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: request(url, "POST", "/predict", images["red"],
                                                      {"Content-Type": "image/jpeg"})[:2], range(16)))
    assert all(status == 200 and answer["label"] == "red" for status, answer in answers)
    batches = app.metrics.batch_sizes
    assert (batches.sum, batches.count) == (16, 2)


def test_metrics_are_prometheus_text(server, images):
    request(server, "POST", "/predict", images["red"], {"Content-Type": "image/jpeg"})
    request(server, "GET", "/nope")
    request(server, "GET", "/health", headers={"Host": "evil.example"})
    status, answer, response = request(server, "GET", "/metrics")
    assert status == 200
    assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    text = answer["_text"]
    for family, kind in [("edge_infer_requests_total", "counter"), ("edge_infer_errors_total", "counter"),
                         ("edge_infer_request_seconds", "histogram"), ("edge_infer_batch_size", "histogram"),
                         ("edge_infer_queue_depth", "gauge")]:
        assert f"# TYPE {family} {kind}" in text
    assert re.search(r'edge_infer_requests_total\{method="POST",route="/predict",status="200"\} [1-9]', text)
    assert re.search(r'edge_infer_requests_total\{method="GET",route="other",status="404"\} [1-9]', text)
    assert re.search(r'edge_infer_requests_total\{method="GET",route="/health",status="403"\} [1-9]', text)
    assert re.search(r'edge_infer_request_seconds_bucket\{le="\+Inf"\} [1-9]', text)
    assert re.search(r"^edge_infer_queue_depth 0$", text, re.M)
    for line in text.splitlines():  # every sample line is NAME{labels} NUMBER
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[^}]*\})? [0-9.e+-]+', line), line


def test_the_app_mounts_in_another_starlette_service(classifier, images):
    """How a user embeds the classifier: mount it under a prefix in their own app."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    async def home(request):
        return JSONResponse({"service": "mine"})

    outer = Starlette(routes=[Route("/", home), Mount("/classify", app=create_app(classifier))])
    with running(outer) as url:
        assert request(url, "GET", "/")[:2] == (200, {"service": "mine"})
        status, answer, _ = request(url, "POST", "/classify/predict", images["green"],
                                    {"Content-Type": "image/jpeg"})
        assert (status, answer["label"]) == (200, "green")
        status, page, _ = request(url, "GET", "/classify/")
        assert status == 200 and 'href="static/app.css"' in page["_text"]
        assert request(url, "GET", "/classify/static/app.css")[0] == 200


# -- errors: always JSON, never a traceback ------------------------------------------------------

@pytest.mark.parametrize("case, status, words", [
    ("truncated-jpeg", 400, ["upload", "corrupt"]),
    ("corrupt-jpeg-in-form", 400, ["red.jpg", "corrupt"]),
    ("empty-raw", 400, ["empty"]),
    ("empty-file-field", 400, ["empty"]),
    ("text-as-text", 415, ["text/plain", "multipart/form-data"]),
    ("text-as-jpeg", 415, ["not an image"]),
    ("text-in-form", 415, ["notes.txt", "not an image"]),
    ("form-without-file", 400, ["no 'file' field", "comment"]),
    ("form-truncated", 400, ["multipart"]),
    ("form-without-boundary", 400, ["multipart"]),
    ("top-k-zero", 400, ["top_k"]),
    ("top-k-word", 400, ["top_k"]),
])
def test_bad_uploads_get_a_json_error(server, images, case, status, words):
    jpeg = images["red"]
    jpeg_type = {"Content-Type": "image/jpeg"}
    path = "/predict"
    if case == "truncated-jpeg":
        body, headers = jpeg[: len(jpeg) // 2], jpeg_type
    elif case == "corrupt-jpeg-in-form":
        body, headers = multipart([("file", "red.jpg", jpeg[:200] + bytes(range(256)) * 4)])
    elif case == "empty-raw":
        body, headers = b"", jpeg_type
    elif case == "empty-file-field":
        body, headers = multipart([("file", "nothing.jpg", b"")])
    elif case == "text-as-text":
        body, headers = b"hello, server", {"Content-Type": "text/plain"}
    elif case == "text-as-jpeg":
        body, headers = b"hello, server", jpeg_type
    elif case == "text-in-form":
        body, headers = multipart([("file", "notes.txt", b"hello, server")])
    elif case == "form-without-file":
        body, headers = multipart([("comment", None, b"no picture today")])
    elif case == "form-truncated":
        body, headers = multipart([("file", "red.jpg", jpeg)])
        body = body[: -len(f"--{BOUNDARY}--\r\n")]
    elif case == "form-without-boundary":
        body, headers = multipart([("file", "red.jpg", jpeg)])[0], {"Content-Type": "multipart/form-data"}
    else:
        body, headers = jpeg, jpeg_type
        path += "?top_k=0" if case == "top-k-zero" else "?top_k=many"
    assert_json_error(*request(server, "POST", path, body, headers)[:2], status, *words)


def test_connection_stays_usable_after_an_error(server, images):
    conn = http.client.HTTPConnection(*address(server), timeout=10)
    try:
        assert request(server, "POST", "/predict", b"junk", {"Content-Type": "image/png"}, conn=conn)[0] == 415
        status, answer, _ = request(server, "POST", "/predict", images["green"],
                                    {"Content-Type": "image/jpeg"}, conn=conn)
        assert (status, answer["label"]) == (200, "green")
    finally:
        conn.close()


def test_too_many_pixels_is_refused(classifier):
    """The Classifier's max_pixels guards the decoder: a 4000x4000 PNG is 56 KB on the wire."""
    small_limit = Classifier(classifier.backend, classifier.info, max_pixels=1_000_000)
    with running(create_app(small_limit)) as url:
        status, answer, _ = request(url, "POST", "/predict", big_png(4000), {"Content-Type": "image/png"})
    assert_json_error(status, answer, 400, "16,000,000 pixels", "1,000,000")


@pytest.mark.parametrize("method, path, status, words", [
    ("GET", "/nope", 404, ["/nope"]),
    ("GET", "/static/../server.py", 404, []),
    ("GET", "/static/index.html", 404, []),
    ("GET", "/predict", 405, ["GET"]),
    ("POST", "/health", 405, ["POST"]),
    ("PUT", "/predict", 405, ["PUT"]),
])
def test_unknown_routes_and_methods(server, method, path, status, words):
    status_got, answer, _ = request(server, method, path, b"" if method != "GET" else None)
    assert_json_error(status_got, answer, status, *words)


def test_a_model_that_fails_at_run_time_gives_500_and_a_log(tmp_path, images, caplog):
    broken = Classifier.load(failing_model(tmp_path / "broken.onnx"), threads=1)
    with running(create_app(broken)) as url:
        status, answer, _ = request(url, "POST", "/predict", images["red"], {"Content-Type": "image/jpeg"})
        assert request(url, "GET", "/health")[0] == 200  # still serving
    assert_json_error(status, answer, 500, "server's log")
    assert any(r.exc_info for r in caplog.records if r.name == "edge_infer.serve")


# -- limits on the request itself ----------------------------------------------------------------

def test_oversized_body_is_refused_from_its_content_length(server):
    """413 arrives although not one byte of the body was sent: the server read only the headers."""
    reply = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                                 b"Content-Length: %d\r\n\r\n" % (MAX_BYTES + 1))
    assert status_of(reply) == 413
    assert_json_error(413, json_body(reply), 413, f"{MAX_BYTES:,}")


def test_oversized_body_sent_whole_still_gets_the_413(server):
    """urllib sends the whole body before it reads: the 413 must still reach it."""
    req = urllib.request.Request(server + "/predict", data=b"\xff" * (MAX_BYTES * 30),
                                 headers={"Content-Type": "image/jpeg"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert_json_error(caught.value.code, json.loads(caught.value.read()), 413, "limit")


def test_expect_100_continue_is_refused_before_the_body(server):
    reply = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                                 b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (MAX_BYTES * 10))
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in reply


@pytest.mark.parametrize("length", ["\u00b2", "+655", "-1", "lots", "5, 6"])
def test_content_length_must_be_plain_digits(server, length):
    """'²' once got no reply (str.isdigit accepts it); '+655' and two lengths were accepted."""
    reply = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                         + f"Content-Length: {length}\r\n\r\nhello".encode())
    assert status_of(reply) == 400
    assert set(json_body(reply)) == {"error"}


def test_two_different_content_lengths_are_refused(server):
    reply = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                                 b"Content-Length: 6\r\n\r\nhello!")
    assert status_of(reply) == 400


def test_chunked_upload_is_refused(server):
    reply = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status_of(reply) == 411
    assert "Content-Length" in json_body(reply)["error"]


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
], ids=["garbage", "long-header"])
def test_malformed_requests_get_json_too(server, raw):
    reply = raw_exchange(server, raw)
    assert status_of(reply) == 400
    assert set(json_body(reply)) == {"error"}


def test_slow_body_gets_408(classifier):
    """2 bytes of a declared 1000, then nothing: the deadline ends the wait."""
    with running(create_app(classifier, timeout=0.3)) as url:
        reply = raw_exchange(url, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                                  b"Content-Length: 1000\r\nConnection: close\r\n\r\n\xff\xd8")
    assert status_of(reply) == 408
    assert "did not arrive within 0.3 s" in json_body(reply)["error"]


def test_slow_prediction_gets_503(classifier, images):
    """The model does not answer until the 503 has arrived (a gate, not a slow decode)."""
    slow, gate = gated(classifier)
    try:
        with running(create_app(slow, timeout=1.0)) as url:
            status, answer, response = request(url, "POST", "/predict", images["red"],
                                               {"Content-Type": "image/jpeg"})
    finally:
        gate.open.set()
    assert_json_error(status, answer, 503, "no answer within 1 s")
    assert response.getheader("Retry-After") == "1"


# -- attacks (issue 13): each bounded, each answered with a 4xx/503 ------------------------------

def test_a_form_of_many_parts_is_refused_quickly(server):
    """1.6 M empty parts once took 21 s and 847 MB; the parser now stops at the part limit."""
    part = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n".encode()
    body = part * 1000 + f"--{BOUNDARY}--\r\n".encode()  # ~85 KB, under MAX_BYTES
    status, answer, _ = request(server, "POST", "/predict", body,
                                {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert_json_error(status, answer, 400, "multipart", "fields")
    assert request(server, "GET", "/health")[0] == 200


@pytest.mark.parametrize("body", [b"--b\r\n\r\n\r\n" * 1_000_000 + b"--b--\r\n", b"\r\n--b" * 1_800_000],
                         ids=["1M-header-less-parts", "1.8M-bare-delimiters"])
def test_a_9_mb_form_of_a_million_parts_gets_its_400(classifier, body):
    """9 MB of parts, under the 20 MB body limit, that the parser refuses early: the client
    sends it whole before reading, and once saw its connection reset instead of the 400."""
    with running(create_app(classifier)) as url:
        status, answer, _ = request(url, "POST", "/predict", body,
                                    {"Content-Type": "multipart/form-data; boundary=b"})
        assert_json_error(status, answer, 400, "multipart")
        assert request(url, "GET", "/health")[0] == 200


def test_64_simultaneous_connects_are_all_answered(server):
    """A listen queue of 5 once dropped 132 of 640 connects; the backlog is 1024 now."""
    barrier = threading.Barrier(64)

    def health(_: int) -> int:
        barrier.wait(timeout=20)
        return request(server, "GET", "/health")[0]

    with ThreadPoolExecutor(64) as pool:
        assert list(pool.map(health, range(64))) == [200] * 64


def test_slow_header_connections_are_closed_and_do_not_block_others(classifier):
    """Slowloris: 50 connections that never finish their headers are closed after the header
    deadline, and /health answers meanwhile."""
    with running(create_app(classifier), ServerLimits(header_timeout=0.5, max_connections=512)) as url:
        socks = [socket.create_connection(address(url), timeout=10) for _ in range(50)]
        try:
            for s in socks:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            assert request(url, "GET", "/health")[0] == 200
            for s in socks:
                assert read_until_closed(s) == b""  # the server hung up, with nothing sent
        finally:
            for s in socks:
                s.close()


def test_connections_past_the_cap_evict_the_oldest_idle_one(classifier):
    """Past max_connections, the oldest connection that is not in a request is closed, so idle
    or slowloris sockets cannot lock a working client out. Oldest by the order of arrival (the
    kernel hands connections over in the order they were made), not by a clock."""
    with running(create_app(classifier), ServerLimits(max_connections=4, header_timeout=30)) as url:
        idle = [socket.create_connection(address(url), timeout=10) for _ in range(4)]
        try:
            for s in idle:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a head never finished
            assert request(url, "GET", "/health")[0] == 200
            assert read_until_closed(idle[0]) == b""  # the oldest was let go
        finally:
            for s in idle:
                s.close()


def test_stalled_uploads_cannot_hold_more_than_the_body_memory(classifier, images):
    """100 stalled uploads once held 1.97 GB. Bodies admitted at once are capped by their
    declared length (body_memory): the next one gets 503 + Retry-After while they stall, and
    once they go, uploads are admitted again (their 408 is test_slow_body_gets_408's)."""
    app = create_app(classifier, max_bytes=MAX_BYTES, timeout=60,
                     batching=BatchConfig(body_memory=3 * MAX_BYTES))
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: %d\r\n\r\n" % MAX_BYTES)
    with running(app) as url:
        stalled = [socket.create_connection(address(url), timeout=10) for _ in range(3)]
        try:
            for s in stalled:
                s.sendall(head + b"\xff\xd8")
            wait_until(lambda: app.batcher.body_bytes == 3 * MAX_BYTES, "3 stalled uploads admitted")
            status, answer, response = request(url, "POST", "/predict", b"\xff" * MAX_BYTES,
                                               {"Content-Type": "image/jpeg"})
            assert_json_error(status, answer, 503, "busy")
            assert response.getheader("Retry-After") == "1"
        finally:
            for s in stalled:
                s.close()
        wait_until(lambda: app.batcher.body_bytes == 0, "the stalled uploads let go")
        status, answer, _ = request(url, "POST", "/predict", images["red"], {"Content-Type": "image/jpeg"})
        assert (status, answer["label"]) == (200, "red")


def test_a_small_file_that_decodes_huge_is_refused_by_the_decode_budget(classifier):
    """A 16-bit greyscale PNG of 3000x3000 is a few KB; decoding it needs ~67 MB by the
    estimate, over a 32 MB budget: 413 naming the size, before any decoding."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((3000, 3000), np.uint16)).save(buf, "PNG")
    assert len(buf.getvalue()) < MAX_BYTES
    app = create_app(classifier, batching=BatchConfig(decode_memory=32 << 20))
    with running(app) as url:
        status, answer, _ = request(url, "POST", "/predict", buf.getvalue(), {"Content-Type": "image/png"})
        assert_json_error(status, answer, 413, "3000x3000 I;16", "MB", "--decode-memory-mb")
        small = encode(tiny_models.solid("red"))
        assert request(url, "POST", "/predict", small, {"Content-Type": "image/png"})[1]["label"] == "red"


def test_a_big_16_bit_image_within_the_budget_is_classified(classifier):
    buf = io.BytesIO()
    Image.fromarray(np.full((1500, 1500), 65535, np.uint16)).save(buf, "PNG")
    with running(create_app(classifier)) as url:
        status, answer, _ = request(url, "POST", "/predict", buf.getvalue(), {"Content-Type": "image/png"})
    assert status == 200 and answer["top_k"][0][1] == pytest.approx(1 / 3, abs=0.01)  # white: all equal


@pytest.mark.parametrize("headers", [{"Host": "evil.example"}, {"Origin": "https://evil.example"},
                                     {"Origin": "null"}])
def test_other_sites_cannot_use_the_server(server, images, headers):
    """A web page the user has open could POST a form here (no CORS preflight for multipart)."""
    body, form = multipart([("file", "red.jpg", images["red"])])
    status, answer, _ = request(server, "POST", "/predict", body, {**form, **headers})
    assert_json_error(status, answer, 403, "not allowed")


def test_allow_host_admits_a_name(classifier, images):
    with running(create_app(classifier, allow_hosts=("photos.lan",))) as url:
        status, answer, _ = request(url, "POST", "/predict", images["red"],
                                    {"Content-Type": "image/jpeg", "Host": "photos.lan:8000",
                                     "Origin": "http://photos.lan:8000"})
    assert (status, answer["label"]) == (200, "red")


def test_a_full_queue_gets_503_and_retry_after(classifier, images):
    """max_queue=2 and a model held until 6 answers are in: of 8 uploads at once, the 2
    admitted are answered once it runs, the other 6 at once with 503 + Retry-After."""
    slow, gate = gated(classifier)
    app = create_app(slow, timeout=60, batching=BatchConfig(max_queue=2))
    try:
        with running(app) as url, ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(request, url, "POST", "/predict", images["red"],
                                   {"Content-Type": "image/jpeg"}) for _ in range(8)]
            refused = [f.result() for _, f in zip(range(6), as_completed(futures), strict=False)]
            gate.open.set()
            answers = [f.result() for f in futures]
    finally:
        gate.open.set()
    assert [status for status, _, _ in refused] == [503] * 6
    assert all(r.getheader("Retry-After") == "1" for _, _, r in refused)
    assert sorted(status for status, _, _ in answers) == [200] * 2 + [503] * 6


def test_draining_answers_queued_work_with_503(classifier, images):
    """What SIGTERM does (run.Server calls drain): queued predictions get 503, not 500, and
    /health says the server is stopping. Batches of 1 and a held model: at most one upload is
    in the model when the drain comes, the other 5 (or 6) are queued or decoding."""
    slow, gate = gated(classifier)
    app = create_app(slow, timeout=60, batching=BatchConfig(max_batch=1))
    try:
        with running(app) as url:
            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(request, url, "POST", "/predict", images["red"],
                                       {"Content-Type": "image/jpeg"}) for _ in range(6)]
                wait_until(lambda: app.batcher.in_flight == 6, "6 uploads admitted")
                app.drain()
                gate.open.set()
                answers = [f.result() for f in futures]
            status, answer, _ = request(url, "GET", "/health")
    finally:
        gate.open.set()
    assert (status, answer) == (503, {"status": "stopping"})
    statuses = [s for s, _, _ in answers]
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 5, statuses
    for s, answer, response in answers:
        if s == 503:
            assert_json_error(s, answer, 503, "stopping")
            assert response.getheader("Retry-After") == "1"


# -- the process: URL on stdout, clean exit on SIGTERM and Ctrl-C ---------------------------------

LAUNCHERS = {
    "serve()": ["-c", "import sys; from edge_infer.serve import serve; "
                      "serve(sys.argv[1], port=0, threads=1)", "{model}"],
    "edge-infer serve": ["-m", "edge_infer", "serve", "{model}", "--port", "0", "--threads", "1"],
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_signal(colour_model, launcher, sig):
    argv = [a.format(model=colour_model) for a in LAUNCHERS[launcher]]
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        line = read_line(proc, timeout=30)
        assert "http://127.0.0.1:" in line, line
        url = line[line.index("http://"):].split()[0]
        with urllib.request.urlopen(url + "health", timeout=10) as response:
            assert json.load(response)["status"] == "ok"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "Traceback" not in err and "stopped" in err
    assert "GET /health 200" in err  # the request log, through logging
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_sigterm_answers_queued_work_with_503_and_exits_0(colour_model, images):
    """Queued requests once got 500 on SIGTERM; now 503 + Retry-After, and the process exits 0.
    The server's model is held until the drain (asgi_server.serve_gated), so all 16 are queued
    when the signal comes, whatever this CPU's speed."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("asgi_server.py")), str(colour_model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1",  # the script imports benchmarks.web
                                 "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                                os.environ.get("PYTHONPATH", "")])})
    try:
        line = read_line(proc, timeout=30)
        url = line[line.index("http://"):].split()[0].rstrip("/")
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(request, url, "POST", "/predict", images["red"],
                                   {"Content-Type": "image/jpeg"}) for _ in range(16)]
            wait_for_queue(url, depth=16)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    statuses = [s for s, _, _ in answers]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    assert all(r.getheader("Retry-After") == "1" for s, _, r in answers if s == 503)
    assert "Traceback" not in proc.stderr.read()


def wait_for_queue(url: str, depth: int) -> None:
    """Poll /metrics until ``depth`` predictions are admitted and unanswered."""
    def depth_now() -> int:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        return int(float(re.search(r"^edge_infer_queue_depth (\S+)$", text, re.M).group(1)))

    wait_until(lambda: depth_now() >= depth, f"{depth} predictions queued")


def sigint_as_in_a_terminal() -> None:
    """Ctrl-C reaches a foreground process with SIGINT at its default; but when the test run
    itself was started in the background (``cmd &`` in a script), SIGINT is ignored and children
    inherit that, so Python never installs its KeyboardInterrupt handler. Reset it in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"the server printed nothing in {timeout} s")
    return proc.stdout.readline()


def test_a_taken_port_is_a_one_line_error(colour_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EdgeInferError, match=f"cannot listen on 127.0.0.1:{port}: .*--port 0"):
            serve(str(colour_model), port=port, threads=1)


def test_serve_without_the_extra_says_how_to_install_it(colour_model):
    """The wheel's core has no Starlette; the command names the pip line instead of a traceback."""
    code = ("import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; "
            "from edge_infer.cli import main; sys.argv = ['edge-infer', 'serve', sys.argv[1]]; main()")
    done = subprocess.run([sys.executable, "-c", code, str(colour_model)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert 'pip install "edge-infer[serve]"' in done.stderr and "Traceback" not in done.stderr

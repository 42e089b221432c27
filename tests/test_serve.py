"""``edge-infer serve`` over real HTTP on 127.0.0.1: a server thread per module, real sockets.

The tiny colour model makes every answer checkable: a red image must come back "red".
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
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

import tiny_models
from edge_infer import Classifier, EdgeInferError
from edge_infer.server import DEFAULT_TOP_K, EdgeInferServer, make_server, serve

MAX_BYTES = 100_000
TIMEOUT = 5.0
BOUNDARY = "----edge-infer-test-7MA4YWxkTrZu0gW"


# -- helpers -------------------------------------------------------------------------------------

@contextlib.contextmanager
def running(server: EdgeInferServer) -> Iterator[EdgeInferServer]:
    """Serve in a daemon thread; shut down and close the socket on the way out."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def request(server: EdgeInferServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
    """One request; the JSON answer is parsed (every answer but the page is JSON)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        if own:
            conn.close()
    assert response.getheader("Content-Length") == str(len(raw))
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


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(colour_model) -> Classifier:
    return Classifier.load(colour_model, threads=1)


@pytest.fixture(scope="module")
def server(classifier) -> Iterator[EdgeInferServer]:
    with running(make_server(classifier, port=0, max_bytes=MAX_BYTES, timeout=TIMEOUT,
                             workers=2, access_log=False)) as srv:
        yield srv


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
    assert 0 <= answer["ms"] < TIMEOUT * 1000


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


def test_health(server):
    assert request(server, "GET", "/health")[:2] == (200, {"status": "ok"})


def test_info_is_the_model_metadata(server, classifier):
    status, info, _ = request(server, "GET", "/info")
    assert status == 200
    assert info == json.loads(json.dumps(classifier.info.to_dict()))
    assert info["labels"] == list(tiny_models.COLOURS)


@pytest.mark.parametrize("path, content_type, needle", [
    ("/", "text/html; charset=utf-8", 'id="file"'),
    ("/static/app.js", "text/javascript; charset=utf-8", "/predict"),
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
    assert 'fetch("/info")' in text and "fetch(`/predict" in text


def test_concurrent_clients_get_their_own_answers(server, images):
    """8 clients x 50 requests, each on its own keep-alive connection, colours interleaved."""
    def client(i: int) -> list[tuple[int, str, str]]:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        out = []
        try:
            for j in range(50):
                colour = tiny_models.COLOURS[(i + j) % 3]
                status, answer, _ = request(server, "POST", "/predict", images[colour],
                                            {"Content-Type": "image/jpeg"}, conn=conn)
                out.append((status, colour, answer.get("label")))
        finally:
            conn.close()
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(client, range(8)) for r in rs]
    assert len(results) == 400
    assert [r for r in results if r[0] != 200 or r[1] != r[2]] == []


# -- errors: always JSON, never a traceback ------------------------------------------------------

def assert_json_error(status: int, answer: dict, expected_status: int, *words: str) -> None:
    assert status == expected_status, answer
    assert set(answer) == {"error"}
    assert "Traceback" not in answer["error"]
    for word in words:
        assert word in answer["error"]


@pytest.mark.parametrize("case, status, words", [
    ("truncated-jpeg", 400, ["upload", "corrupt"]),
    ("corrupt-jpeg-in-form", 400, ["red.jpg", "corrupt"]),
    ("empty-raw", 400, ["empty"]),
    ("empty-file-field", 400, ["empty"]),
    ("text-as-text", 415, ["text/plain", "multipart/form-data"]),
    ("text-as-jpeg", 415, ["not an image"]),
    ("text-in-form", 415, ["notes.txt", "not an image"]),
    ("form-without-file", 400, ["no 'file' field", "comment"]),
    ("form-truncated", 400, ["closing boundary"]),
    ("form-without-boundary", 400, ["boundary"]),
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
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        assert request(server, "POST", "/predict", b"junk", {"Content-Type": "image/png"}, conn=conn)[0] == 415
        status, answer, _ = request(server, "POST", "/predict", images["green"],
                                    {"Content-Type": "image/jpeg"}, conn=conn)
        assert (status, answer["label"]) == (200, "green")
    finally:
        conn.close()


def test_too_many_pixels_is_refused(server, classifier):
    """The Classifier's max_pixels guards the decoder: a 4000x4000 PNG is 56 KB on the wire."""
    small_limit = make_server(Classifier(classifier.session, classifier.info, max_pixels=1_000_000),
                              port=0, access_log=False)
    with running(small_limit) as srv:
        buf = io.BytesIO()
        Image.new("RGB", (4000, 4000), (255, 0, 0)).save(buf, "PNG")
        status, answer, _ = request(srv, "POST", "/predict", buf.getvalue(), {"Content-Type": "image/png"})
        assert_json_error(status, answer, 400, "16,000,000 pixels", "1,000,000")


# -- limits on the request itself ----------------------------------------------------------------

def test_oversized_body_is_refused_from_its_content_length(server):
    """413 arrives although not one byte of the body was sent: the server read only the headers."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", "image/jpeg")
        conn.putheader("Content-Length", str(MAX_BYTES + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert_json_error(response.status, json.loads(response.read()), 413, f"{MAX_BYTES:,}")
        assert response.getheader("Connection") == "close"
    finally:
        conn.close()


def test_oversized_body_sent_whole_still_gets_the_413(server):
    """urllib sends the whole body before reading: the server drains it, so the 413 arrives."""
    req = urllib.request.Request(server.url + "predict", data=b"\xff" * (MAX_BYTES * 3),
                                 headers={"Content-Type": "image/jpeg"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert_json_error(caught.value.code, json.loads(caught.value.read()), 413, "limit")


def test_expect_100_continue_is_refused_before_the_body(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (MAX_BYTES * 10))
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in reply


@pytest.mark.parametrize("headers, status", [
    ("Content-Type: image/jpeg\r\n", 411),
    ("Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n", 411),
    ("Content-Type: image/jpeg\r\nContent-Length: lots\r\n", 400),
])
def test_body_length_must_be_declared(server, headers, status):
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
                     + (b"5\r\nhello\r\n0\r\n\r\n" if "chunked" in headers else b""))
        reply = read_until_closed(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert_json_error(status, json.loads(body), status)


def test_slow_client_gets_408(classifier):
    with running(make_server(classifier, port=0, timeout=0.3, access_log=False)) as srv:
        with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 1000\r\n\r\n\xff\xd8")
            start = time.monotonic()
            reply = read_until_closed(sock)
            waited = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive within 0.3 s" in reply
    assert waited < 5


def test_slow_prediction_gets_503(classifier):
    """A 16-megapixel PNG takes ~0.2 s to decode here; the request's deadline is 0.08 s."""
    buf = io.BytesIO()
    Image.new("RGB", (4000, 4000), (0, 0, 255)).save(buf, "PNG")
    with running(make_server(classifier, port=0, timeout=0.08, access_log=False)) as srv:
        status, answer, response = request(srv, "POST", "/predict", buf.getvalue(),
                                           {"Content-Type": "image/png"})
    assert_json_error(status, answer, 503, "no answer within 0.08 s")
    assert response.getheader("Retry-After") == "1"


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- routes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, status, words", [
    ("GET", "/nope", 404, ["/nope", "/predict"]),
    ("GET", "/static/../server.py", 404, []),
    ("GET", "/predict", 405, ["POST"]),
    ("POST", "/health", 405, ["GET"]),
    ("PUT", "/predict", 501, ["PUT"]),
])
def test_unknown_routes_and_methods(server, method, path, status, words):
    status_got, answer, response = request(server, method, path, b"" if method != "GET" else None)
    assert_json_error(status_got, answer, status, *words)
    if status == 405:
        assert response.getheader("Allow") in ("GET", "POST")


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", None),  # HTTP/0.9 style: the answer is the body alone
    (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /health HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431),
], ids=["garbage", "long-header", "many-headers"])
def test_requests_refused_by_http_server_get_json_too(server, raw, status):
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(raw)
        reply = read_until_closed(sock)
    if status is None:
        body = reply
    else:
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert set(json.loads(body)) == {"error"}


def test_a_model_that_fails_at_run_time_gives_500_and_a_log(tmp_path, images, capfd):
    broken = Classifier.load(failing_model(tmp_path / "broken.onnx"), threads=1)
    with running(make_server(broken, port=0, access_log=False)) as srv:
        status, answer, response = request(srv, "POST", "/predict", images["red"],
                                           {"Content-Type": "image/jpeg"})
        assert request(srv, "GET", "/health")[:2] == (200, {"status": "ok"})  # still serving
    assert_json_error(status, answer, 500, "server's log")
    assert response.getheader("Connection") == "close"
    assert "Traceback" in capfd.readouterr().err


# -- the process: URL on stdout, clean exit on SIGTERM and Ctrl-C ---------------------------------

LAUNCHERS = {
    "serve()": ["-c", "import sys; from edge_infer.server import serve; "
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
            assert json.load(response) == {"status": "ok"}
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "Traceback" not in err and "stopped" in err
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


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

"""The cleaning page's server over real HTTP on 127.0.0.1: what it serves, and what it refuses.

The second half replays the attacks issue 13 measured against the old ``http.server`` (a
``Content-Length`` of ``-1`` hung it; slow headers held a thread each, forever) on raw sockets,
each bounded: a handful of connections, short limits (``ServerLimits``, ``body_timeout``) and
socket timeouts of seconds. Each checks that the attacker gets a JSON 4xx (or, for a head that
never ends, a closed connection) and that a normal client is still answered.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image
from test_clean_fixtures import make_run, serving, snapshot

from benchmarks.web import in_thread
from export.run_folder import RunFolder
from train.clean.app import MAX_BODY, MAX_DECISIONS
from train.clean.ranking import CleanError
from train.clean.server import ServerLimits, make_server

pytestmark = pytest.mark.torch  # train.data (fastai) lists the data folder's images

QUICK = {"limits": ServerLimits(header_timeout=0.5, keep_alive=1), "body_timeout": 0.5}
WAIT = 10  # seconds any one answer may take on a loaded CI machine: a bound, not a measurement


@pytest.fixture
def served(tmp_path):
    with serving(tmp_path) as (r, srv):
        yield r, srv


@pytest.fixture
def quick(tmp_path):
    """A server with sub-second header/body deadlines, so the slow attacks end quickly."""
    with serving(tmp_path, **QUICK) as (r, srv):
        yield r, srv


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=WAIT)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", data


def post_json(srv, payload, headers=None):
    return request(srv, "POST", "/api/apply", json.dumps(payload).encode(),
                   {"Content-Type": "application/json", **(headers or {})})


def connect(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=WAIT)


@contextlib.contextmanager
def clients(srv, n: int, first_bytes: bytes):
    """``n`` connections that each send ``first_bytes`` and then nothing (an attacker's half
    request); closed when the block ends, whatever the test asserted."""
    socks = [connect(srv) for _ in range(n)]
    try:
        for sock in socks:
            sock.sendall(first_bytes)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds it)."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    return raw


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the one answer the server sends before closing."""
    head, _, body = read_all(sock).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def raw_request(srv, data: bytes) -> tuple[int, dict]:
    with connect(srv) as sock:
        sock.sendall(data)
        return read_answer(sock)


def host(srv) -> bytes:
    return f"Host: 127.0.0.1:{srv.server_address[1]}".encode()


def answers_normally(srv) -> bool:
    return request(srv, "GET", "/api/dupes")[0] == 200


# -- what it serves -------------------------------------------------------------------------------
def test_the_page_and_its_assets_are_served(served):
    _, srv = served
    status, ctype, body = request(srv, "GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b"/static/app.js" in body and b"http" not in body.split(b"<body>")[0]  # no CDN
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        status, ctype, _ = request(srv, "GET", f"/static/{name}")
        assert status == 200 and kind in ctype
    assert srv.url.startswith("http://127.0.0.1:") and srv.server_address[1] > 0


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/items", "/nope", "/static/../app.py"])
def test_every_answer_carries_the_content_security_policy(served, path):
    _, srv = served
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=WAIT)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    assert "default-src 'self'" in resp.getheader("Content-Security-Policy")
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    conn.close()


def test_items_come_highest_loss_first_with_everything_the_page_shows(served):
    r, srv = served
    status, _, body = request(srv, "GET", "/api/items")
    payload = json.loads(body)
    assert status == 200
    assert [it["path"] for it in payload["items"]] == list(r.ranked)
    assert set(payload["items"][0]) == {"path", "label", "predicted", "probability", "loss", "split"}
    assert payload["labels"] == ["bird", "cat", "dog"]
    assert payload["undo"].endswith("--undo") and payload["journal"].endswith(".quarantine/journal.jsonl")
    assert payload["journal_damaged"] == []


def test_a_thumbnail_is_a_small_jpeg_of_the_image(served):
    r, srv = served
    status, ctype, body = request(srv, "GET", f"/thumb?path={r.ranked[0]}")
    assert (status, ctype) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(body)).size == (48, 48)
    status, _, body = request(srv, "GET", f"/image?path={r.ranked[0]}")
    assert status == 200 and body == (r.data / r.ranked[0]).read_bytes()


def test_an_unchanged_image_is_not_sent_again(served):
    r, srv = served
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=WAIT)
    conn.request("GET", f"/thumb?path={r.ranked[0]}")
    resp = conn.getresponse()
    resp.read()
    conn.request("GET", f"/thumb?path={r.ranked[0]}", headers={"If-None-Match": resp.getheader("ETag")})
    again = conn.getresponse()
    assert (again.status, again.read()) == (304, b"")
    conn.close()


@pytest.mark.parametrize("path", [
    "../run/train.json", "..%2Frun%2Ftrain.json", "%2Fetc%2Fpasswd", "/etc/passwd",
    "cat/../../run/train.json", ".quarantine/journal.jsonl", "cat/outside.png", "",
])
@pytest.mark.parametrize("route", ["/thumb", "/image"])
def test_nothing_outside_the_data_folder_is_served(served, route, path):
    r, srv = served
    os.symlink(r.folder / "train.json", r.data / "cat" / "outside.png")  # a link leading out
    status, _, body = request(srv, "GET", f"{route}?path={path}")
    assert status == 403, body
    assert b"train.json" not in body.split(b'"error"')[0]


def test_a_missing_image_and_an_unknown_route_are_json_404s(served):
    _, srv = served
    status, ctype, body = request(srv, "GET", "/thumb?path=cat/nope.png")
    assert (status, ctype) == (404, "application/json") and "cat/nope.png" in json.loads(body)["error"]
    status, ctype, body = request(srv, "GET", "/static/nope.js")
    assert (status, ctype) == (404, "application/json")
    status, _, body = request(srv, "GET", "/api/apply")
    assert status == 405 and "error" in json.loads(body)


def test_another_host_name_is_refused(served):
    _, srv = served  # a DNS-rebinding page would arrive with its own Host header
    status, _, body = request(srv, "GET", "/api/items", headers={"Host": f"evil.example:{srv.server_address[1]}"})
    assert status == 403 and "evil.example" in json.loads(body)["error"]


@pytest.mark.parametrize("headers,status", [
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
    ({"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"}, 403),  # another local app
    ({"Content-Type": "application/json", "Origin": "null"}, 403),  # a sandboxed frame or file:// page
])
def test_apply_refuses_what_another_web_page_could_send(served, headers, status):
    r, srv = served
    before = snapshot(r.data)
    body = json.dumps({"decisions": [{"path": r.ranked[0], "action": "delete"}]}).encode()
    assert request(srv, "POST", "/api/apply", body, headers)[0] == status
    assert snapshot(r.data) == before


def test_apply_moves_files_and_a_bad_decision_moves_none(served):
    r, srv = served
    before = snapshot(r.data)
    status, _, body = post_json(srv, {"decisions": [{"path": r.ranked[0], "action": "delete"},
                                                    {"path": r.ranked[1], "action": "relabel", "label": "cow"}]})
    assert status == 400 and "unknown label 'cow'" in json.loads(body)["error"]
    assert snapshot(r.data) == before
    status, _, body = post_json(srv, {"decisions": [{"path": r.ranked[0], "action": "delete"}]},
                                {"Origin": f"http://127.0.0.1:{srv.server_address[1]}"})
    assert status == 200, body
    assert json.loads(body)["deleted"] == [f"{r.ranked[0]} -> .quarantine/{r.ranked[0]}"]
    assert (r.data / ".quarantine" / r.ranked[0]).is_file()


@pytest.mark.parametrize("body,message", [
    (b"{not json", "not JSON"),
    (json.dumps({"decisions": [{"path": "cat/cat1.png", "action": "keep"}] * (MAX_DECISIONS + 1)}).encode(),
     f"{MAX_DECISIONS + 1:,} decisions at once; the page applies at most {MAX_DECISIONS:,}"),
    (b'{"decisions": "all of them"}', 'expected {"decisions"'),
    (b'{"decisions": [7]}', "decision 1: expected an object with a string path"),
])
def test_a_malformed_apply_is_a_one_line_400(served, body, message):
    _, srv = served
    status, ctype, answer = request(srv, "POST", "/api/apply", body, {"Content-Type": "application/json"})
    assert (status, ctype) == (400, "application/json")
    assert message in json.loads(answer)["error"]


def test_duplicates_are_scanned_in_the_background(served):
    r, srv = served
    assert json.loads(request(srv, "GET", "/api/dupes")[2])["state"] in ("idle", "running", "done")
    srv.dupe_scan.join(60)  # a bound for a broken scan; a working one is done in well under a second
    d = json.loads(request(srv, "GET", "/api/dupes")[2])
    assert d["state"] == "done" and d["total"] == len(r.ranked) and d["groups"] == []


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_only_loopback_addresses_are_served(run_folder_path, host):
    with pytest.raises(CleanError, match="not a loopback address"):
        make_server(RunFolder.load(run_folder_path), host=host)


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux routes all of 127/8 to loopback")
def test_another_loopback_address_is_served_under_its_own_name(run_folder_path):
    srv = make_server(RunFolder.load(run_folder_path), host="127.0.0.2")
    try:
        with in_thread(srv.run, srv.stop):
            conn = http.client.HTTPConnection("127.0.0.2", srv.server_address[1], timeout=WAIT)
            conn.request("GET", "/api/dupes")
            assert conn.getresponse().status == 200
            conn.close()
            assert srv.url == f"http://127.0.0.2:{srv.server_address[1]}/"
    finally:
        srv.socket.close()


@pytest.fixture
def run_folder_path(tmp_path):
    return make_run(tmp_path, "folders").folder


def test_names_with_spaces_and_accents_are_served_and_moved(served):
    r, srv = served
    name = "cat/mon chat é#1.png"
    (r.data / name).write_bytes((r.data / r.ranked[0]).read_bytes())
    status, ctype, _ = request(srv, "GET", f"/thumb?path={urllib.parse.quote(name)}")
    assert (status, ctype) == (200, "image/jpeg")
    status, _, body = post_json(srv, {"decisions": [{"path": name, "action": "relabel", "label": "dog"}]})
    assert status == 200, body
    assert (r.data / "dog" / "mon chat é#1.png").is_file()


# -- damaged inputs: an answer, never a dropped connection ----------------------------------------
def test_a_damaged_journal_is_listed_and_the_page_still_loads(served):
    r, srv = served
    assert post_json(srv, {"decisions": [{"path": "cat/cat1.png", "action": "delete"}]})[0] == 200
    journal = r.data / ".quarantine" / "journal.jsonl"
    record = journal.read_bytes()
    with journal.open("ab") as f:  # a record torn inside "é", then one with a key missing
        f.write(record.replace(b"cat/cat1", "cat/été".encode())[:record.index(b"cat/cat1") + 5] + b"\n")
        f.write(b'{"op": "move", "id": 7, "src": "dog/dog1.png"}\n')
    status, _, body = request(srv, "GET", "/api/items")
    assert status == 200, body
    payload = json.loads(body)
    assert payload["pending"] == 1
    assert payload["journal_damaged"] == [f"{journal} line 3: move record 7: no 'dst'"]


def test_a_top_losses_csv_that_is_not_utf8_is_a_one_line_error(served):
    r, srv = served
    (r.folder / "top_losses.csv").write_bytes(b"path,label,predicted,loss\ncat/\xe9.png,cat,dog,1\n")
    status, ctype, body = request(srv, "GET", "/api/items")
    assert (status, ctype) == (400, "application/json")
    error = json.loads(body)["error"]
    assert error.startswith(f"{r.folder / 'top_losses.csv'}: not readable as UTF-8 CSV")
    assert "Traceback" not in error


# -- the attacks of issue 13, replayed on raw sockets ---------------------------------------------
@pytest.mark.parametrize("length", [b"-1", "²".encode(), b"+655", b"0x10", b"1e3", b"12, 13"])
def test_a_content_length_that_is_not_plain_digits_is_a_json_400(served, length):
    _, srv = served
    status, body = raw_request(srv, b"POST /api/apply HTTP/1.1\r\n" + host(srv) + b"\r\n"
                               b"Content-Type: application/json\r\nContent-Length: " + length +
                               b"\r\n\r\n{}")
    assert status == 400 and "malformed HTTP request" in body["error"]
    assert answers_normally(srv)


def test_two_content_lengths_that_disagree_are_refused(served):
    _, srv = served
    status, _ = raw_request(srv, b"POST /api/apply HTTP/1.1\r\n" + host(srv) + b"\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                            b"Content-Length: 40\r\n\r\n{}")
    assert status == 400


def test_an_oversize_body_is_refused_before_it_is_sent(served):
    r, srv = served
    before = snapshot(r.data)
    with connect(srv) as sock:  # headers only: the server must answer without waiting for the body
        sock.sendall(b"POST /api/apply HTTP/1.1\r\n" + host(srv) + b"\r\nContent-Type: application/json"
                     b"\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n")
        status, body = read_answer(sock)
    assert status == 413 and "limit" in body["error"]
    assert snapshot(r.data) == before


def test_a_chunked_body_is_refused(served):
    _, srv = served
    status, body = raw_request(srv, b"POST /api/apply HTTP/1.1\r\n" + host(srv) + b"\r\n"
                               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"2\r\n{}\r\n0\r\n\r\n")
    assert status == 411 and "Content-Length" in body["error"]


def test_slow_headers_are_cut_off_and_do_not_block_a_normal_client(quick):
    _, srv = quick
    with clients(srv, 16, b"GET /api/items HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a") as attackers:
        assert answers_normally(srv)
        assert [read_all(sock) for sock in attackers] == [b""] * 16  # closed at the header deadline
    assert answers_normally(srv)


def test_a_connection_that_never_sends_anything_is_closed(quick):
    _, srv = quick
    with connect(srv) as sock:
        assert read_all(sock) == b""


@pytest.fixture
def capped(tmp_path):
    with serving(tmp_path, limits=ServerLimits(max_connections=8)) as (r, srv):
        yield r, srv


def test_more_idle_connections_than_the_cap_do_not_lock_out_a_normal_client(capped):
    _, srv = capped  # uvicorn's own limit_concurrency would answer 503 here until they time out
    with clients(srv, 24, b"GET / HTTP/1.1\r\nHost: 127.0.0.1"):
        assert [answers_normally(srv) for _ in range(4)] == [True] * 4


def test_a_stalled_body_gets_a_408(quick):
    r, srv = quick
    before = snapshot(r.data)
    with connect(srv) as sock:
        sock.sendall(b"POST /api/apply HTTP/1.1\r\n" + host(srv) + b"\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000\r\n\r\n{\"decisions\": [")  # then nothing
        status, body = read_answer(sock)
    assert status == 408 and "body did not arrive" in body["error"]
    assert snapshot(r.data) == before and answers_normally(srv)


def test_stalled_bodies_waiting_their_turn_get_a_408_too(quick):
    _, srv = quick  # one body is read at a time (a memory bound); the wait is inside the deadline
    with clients(srv, 4, b"POST /api/apply HTTP/1.1\r\n" + host(srv) + b"\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{") as uploads:
        assert [read_answer(sock)[0] for sock in uploads] == [408] * 4
    assert answers_normally(srv)


def test_an_idle_keep_alive_connection_is_closed(quick):
    _, srv = quick
    with connect(srv) as sock:
        sock.sendall(b"GET /favicon.ico HTTP/1.1\r\n" + host(srv) + b"\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):  # the 204, then the close once keep-alive runs out
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 204")


def test_a_burst_of_simultaneous_connections_is_answered(served):
    _, srv = served  # the old server's listen queue of 5 dropped such bursts
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda _: request(srv, "GET", "/favicon.ico")[0], range(64)))
    assert statuses == [204] * 64


# -- the command ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_command_serves_then_stops_cleanly_on_a_signal(run_folder_path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "train", "clean", str(run_folder_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:  # SIG_DFL: SIGINT as in a terminal, even when this test run was started in the background
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(60), "clean printed no URL"
        line = proc.stdout.readline()
        url = line[line.index("http://"):].split()[0]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("GET", "/api/items")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "Traceback" not in err and "clean: stopped" in err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

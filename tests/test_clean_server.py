"""The cleaning page's server over real HTTP on 127.0.0.1: what it serves, and what it refuses."""

from __future__ import annotations

import http.client
import io
import json
import os
import time
import urllib.parse

import pytest
from PIL import Image

from test_clean_fixtures import make_run, serving, snapshot
from train.clean.ranking import CleanError, load_run
from train.clean.server import make_server

pytestmark = pytest.mark.torch  # train.data (fastai) lists the data folder's images


@pytest.fixture
def served(tmp_path):
    with serving(tmp_path) as (r, srv):
        yield r, srv


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", data


def post_json(srv, payload, headers=None):
    return request(srv, "POST", "/api/apply", json.dumps(payload).encode(),
                   {"Content-Type": "application/json", **(headers or {})})


def test_the_page_and_its_assets_are_served(served):
    _, srv = served
    status, ctype, body = request(srv, "GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b"/static/app.js" in body and b"http" not in body.split(b"<body>")[0]  # no CDN
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        status, ctype, _ = request(srv, "GET", f"/static/{name}")
        assert status == 200 and kind in ctype
    assert srv.url.startswith("http://127.0.0.1:") and srv.server_address[1] > 0


def test_items_come_highest_loss_first_with_everything_the_page_shows(served):
    r, srv = served
    status, _, body = request(srv, "GET", "/api/items")
    payload = json.loads(body)
    assert status == 200
    assert [it["path"] for it in payload["items"]] == list(r.ranked)
    assert set(payload["items"][0]) == {"path", "label", "predicted", "probability", "loss", "split"}
    assert payload["labels"] == ["bird", "cat", "dog"]
    assert payload["undo"].endswith("--undo") and payload["journal"].endswith(".quarantine/journal.jsonl")


def test_a_thumbnail_is_a_small_jpeg_of_the_image(served):
    r, srv = served
    status, ctype, body = request(srv, "GET", f"/thumb?path={r.ranked[0]}")
    assert (status, ctype) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(body)).size == (48, 48)
    status, _, body = request(srv, "GET", f"/image?path={r.ranked[0]}")
    assert status == 200 and body == (r.data / r.ranked[0]).read_bytes()


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


def test_a_missing_image_is_404(served):
    _, srv = served
    assert request(srv, "GET", "/thumb?path=cat/nope.png")[0] == 404


def test_another_host_name_is_refused(served):
    _, srv = served  # a DNS-rebinding page would arrive with its own Host header
    status, _, _ = request(srv, "GET", "/api/items", headers={"Host": f"evil.example:{srv.server_address[1]}"})
    assert status == 403


@pytest.mark.parametrize("headers,status", [
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
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


def test_duplicates_are_scanned_in_the_background(served):
    r, srv = served
    deadline = time.monotonic() + 30
    while (d := json.loads(request(srv, "GET", "/api/dupes")[2]))["state"] != "done":
        assert d["state"] in ("idle", "running") and time.monotonic() < deadline
        time.sleep(0.05)
    assert d["total"] == len(r.ranked) and d["groups"] == []


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_only_loopback_addresses_are_served(run_folder_path, host):
    with pytest.raises(CleanError, match="not a loopback address"):
        make_server(load_run(run_folder_path), host=host)


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

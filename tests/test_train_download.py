"""``python -m train download`` against a real HTTP server on 127.0.0.1 (a thread in this test).

The server serves generated images, a truncated JPEG, an HTML page named .jpg, a copy of an
image under another name, a 404 and a URL that never answers in time.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmarks.web import in_thread
from train.cli import cli
from train.download import download, read_urls
from train.errors import TrainError
from train.quarantine import Journal


def jpeg(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


RELEASE_SLOW = threading.Event()  # set when the server stops: slow.jpg never answers before


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/slow.jpg":
            RELEASE_SLOW.wait(60)  # past any --timeout, by an event rather than a guessed sleep
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the client gave up on slow.jpg: expected
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    for i in range(4):
        (site / f"img{i}.jpg").write_bytes(jpeg(i))
    (site / "copy-of-img0.jpg").write_bytes(jpeg(0))
    (site / "slow.jpg").write_bytes(jpeg(9))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, "PNG")
    (site / "img.png").write_bytes(buf.getvalue())
    (site / "truncated.jpg").write_bytes(jpeg(5)[:len(jpeg(5)) // 2])
    (site / "error-page.jpg").write_text("<!doctype html><html><body>Access denied</body></html>")
    httpd = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    with httpd, in_thread(httpd.serve_forever, httpd.shutdown):
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        RELEASE_SLOW.set()  # before shutdown: slow.jpg's handler waits for it


def urls_file(tmp_path: Path, base: str, names: list[str]) -> Path:
    path = tmp_path / "urls.txt"
    path.write_text("# grizzly bears\n\n" + "".join(f"{base}/{n}\n" for n in names))
    return path


ALL = ["img0.jpg", "img1.jpg", "img0.jpg", "copy-of-img0.jpg", "truncated.jpg", "error-page.jpg",
       "missing.jpg", "img.png", "slow.jpg", "img2.jpg"]


def test_download_skips_duplicates_and_quarantines_broken_files(server, tmp_path):
    dest = tmp_path / "data" / "grizzly"
    r = download(urls_file(tmp_path, server, ALL), dest, timeout=0.5, progress=False)
    assert sorted(p.suffix for p in r.saved) == [".jpg", ".jpg", ".jpg", ".png"]  # img0, img1, img, img2
    assert r.duplicate_urls == 1 and r.duplicate_content == 1
    failed = dict(r.failed)
    assert set(failed) == {f"{server}/missing.jpg", f"{server}/slow.jpg"}
    assert failed[f"{server}/missing.jpg"] == "HTTP 404 File not found"
    assert "timed out" in failed[f"{server}/slow.jpg"]
    assert len(r.quarantined) == 2 and all(q.path.startswith("grizzly/") for q in r.quarantined)
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in r.saved)
    quarantine = tmp_path / "data" / ".quarantine"
    log = [rec for rec in Journal(tmp_path / "data").records() if rec["op"] == "move"]
    assert len(log) == 2 and len(list((quarantine / "grizzly").iterdir())) == 2
    assert {rec["why"] for rec in log} == {"download"} and len({rec["batch"] for rec in log}) == 1
    assert {rec["dst"] for rec in log} == {q.moved_to for q in r.quarantined}


def test_clean_undo_puts_back_what_download_quarantined(server, tmp_path):
    """Offline: the server is a thread on 127.0.0.1. The two broken downloads come back,
    byte for byte, to the class folder they were saved in."""
    data = tmp_path / "data"
    r = download(urls_file(tmp_path, server, ["img0.jpg", "truncated.jpg", "error-page.jpg"]),
                 data / "grizzly", progress=False)
    assert len(r.saved) == 1 and len(r.quarantined) == 2
    moved = {q.path: hashlib.sha256((data / q.moved_to).read_bytes()).hexdigest() for q in r.quarantined}

    result = CliRunner().invoke(cli, ["clean", str(data), "--undo"])
    assert result.exit_code == 0, result.output
    assert "undo: 2 restored" in result.stdout
    assert {path: hashlib.sha256((data / path).read_bytes()).hexdigest() for path in moved} == moved
    assert len(list((data / "grizzly").iterdir())) == 3
    assert not (data / ".quarantine" / "grizzly").exists()


def test_download_again_adds_nothing(server, tmp_path):
    dest = tmp_path / "data" / "grizzly"
    urls = urls_file(tmp_path, server, ["img0.jpg", "img1.jpg"])
    assert len(download(urls, dest, progress=False).saved) == 2
    again = download(urls, dest, progress=False)
    assert not again.saved and again.duplicate_content == 2
    assert len(list(dest.iterdir())) == 2


def test_max_counts_good_images_only(server, tmp_path):
    names = ["error-page.jpg", "img0.jpg", "truncated.jpg", "img1.jpg", "img2.jpg", "img3.jpg"]
    r = download(urls_file(tmp_path, server, names), tmp_path / "data" / "bears", max_images=2,
                 progress=False)
    # error-page (quarantined), img0 (1), truncated (quarantined), img1 (2): then it stops
    assert len(r.saved) == 2 and len(r.quarantined) == 2
    assert len(list((tmp_path / "data" / "bears").iterdir())) == 2


def test_cli(server, tmp_path):
    dest = tmp_path / "data" / "grizzly"
    result = CliRunner().invoke(cli, ["download", str(urls_file(tmp_path, server, ALL)),
                                      "--dest", str(dest), "--timeout", "0.5"])
    assert result.exit_code == 0, result.output
    assert "4 new images" in result.output and "2 failed, 2 quarantined" in result.output
    assert f"{server}/missing.jpg: HTTP 404" in result.output


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("# nothing here\n\n", "no URLs"),
])
def test_bad_urls_file(tmp_path, content, message):
    path = tmp_path / "urls.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TrainError, match=message):
        read_urls(path)
    result = CliRunner().invoke(cli, ["download", str(path), "--dest", str(tmp_path / "d")])
    assert result.exit_code == 1 and message in result.output


def test_non_http_url_fails_alone(server, tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text(f"file:///etc/passwd\n{server}/img0.jpg\n")
    r = download(path, tmp_path / "data" / "x", progress=False)
    assert len(r.saved) == 1 and r.failed == [("file:///etc/passwd", "not an http(s) URL")]

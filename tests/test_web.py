"""``edge-infer web``: the folder it writes and its errors (no browser; tests/test_web_browser.py
drives the page in chromium)."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import web_site
from click.testing import CliRunner

from edge_infer.cli import cli
from edge_infer.verify import FP32_MAX_DIFF, INT8_MAX_DIFF
from edge_infer.web import ORT_CDN, ORT_FILES, ORT_VERSION, SHELL_SWAPS, build_site


def run(*args: object):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_the_cli_writes_a_static_site_that_loads_ort_from_the_pinned_cdn(colour_model, tmp_path):
    out = tmp_path / "site"
    result = run("web", colour_model, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"python -m http.server --directory {out} 8000" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.html", "web.js", "page.js", "preprocess.js", "app.css", "manifest.json", colour_model.name])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ort"] == {"version": ORT_VERSION, "base": ORT_CDN}
    assert ORT_VERSION in ORT_CDN
    assert manifest["labels"] == ["red", "green", "blue"]
    assert manifest["preprocess"]["size"] == [32, 32] and manifest["precision"] == "fp32"
    assert manifest["model"]["sha256"] == hashlib.sha256(colour_model.read_bytes()).hexdigest()
    assert (out / colour_model.name).read_bytes() == colour_model.read_bytes()  # as it is, metadata and all
    assert manifest["canaries"] is None  # the colour model has none
    assert manifest["verify"]["fp32_max_diff"] == FP32_MAX_DIFF and manifest["verify"]["int8_max_diff"] == INT8_MAX_DIFF


def test_the_page_is_the_serve_pages_shell_with_its_own_lines(colour_model, tmp_path):
    from importlib import resources

    build_site(colour_model, tmp_path)
    shell = (resources.files("edge_infer") / "static" / "index.html").read_text()
    page = (tmp_path / "index.html").read_text()
    assert 'type="module" src="web.js"' in page and "the photo never leaves your device" in page
    assert all(old not in page for old, _ in SHELL_SWAPS)
    assert [a for a, b in zip(shell.splitlines(), page.splitlines(), strict=False) if a != b] == [
        line for line in shell.splitlines() if any(old in line for old, _ in SHELL_SWAPS)]


def test_a_file_with_canaries_ships_them_as_they_are(tmp_path):
    import onnx
    import tiny_models

    from edge_infer.canaries import CANARIES_KEY

    model = web_site.cnn_model(tmp_path / "cnn.onnx", size=(16, 16))
    tiny_models.add_canaries(model, np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8))
    build_site(model, tmp_path / "site")
    assert json.loads((tmp_path / "site" / "manifest.json").read_text())["canaries"] == "canaries.json"
    entry = next(p.value for p in onnx.load(str(model)).metadata_props if p.key == CANARIES_KEY)
    assert (tmp_path / "site" / "canaries.json").read_text() == entry


def test_python_http_server_is_enough(colour_model, tmp_path):
    build_site(colour_model, tmp_path / "site")
    with web_site.serving(tmp_path / "site") as url:
        page = urllib.request.urlopen(url).read().decode()
        manifest = json.loads(urllib.request.urlopen(url + "manifest.json").read())
        model = urllib.request.urlopen(url + manifest["model"]["file"]).read()
    assert "<title>edge-infer</title>" in page and len(model) == manifest["model"]["bytes"]


def test_ort_dir_copies_the_three_files_the_page_loads(colour_model, tmp_path):
    dist = tmp_path / "node_modules" / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in ORT_FILES + ("ort.all.min.mjs",):
        (dist / name).write_text(name)
    (dist.parent / "package.json").write_text('{"name": "onnxruntime-web", "version": "1.99.0"}')
    out = tmp_path / "site"
    assert run("web", colour_model, "--out", out, "--ort", tmp_path).exit_code == 0  # a node_modules parent
    assert sorted(p.name for p in (out / "ort").iterdir()) == sorted(ORT_FILES)
    assert json.loads((out / "manifest.json").read_text())["ort"] == {"version": "1.99.0", "base": "ort/"}
    assert run("web", colour_model, "--out", out).exit_code == 0  # back to the CDN: ort/ goes
    assert not (out / "ort").exists()


def test_a_folder_without_ort_is_one_line_with_the_install_command(colour_model, tmp_path):
    result = run("web", colour_model, "--out", tmp_path / "site", "--ort", tmp_path)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {tmp_path}: no onnxruntime-web dist here (looked for {', '.join(ORT_FILES)}); "
        f"npm install --prefix DIR onnxruntime-web@{ORT_VERSION}, then pass --ort DIR")
    assert not (tmp_path / "site").exists()


def test_never_writes_into_a_folder_with_other_files(colour_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("web", colour_model, "--out", tmp_path)
    assert result.exit_code == 1 and "holds other files" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_rewriting_a_site_replaces_its_model(colour_model, tmp_path):
    out = tmp_path / "site"
    build_site(colour_model, out)
    other = web_site.cnn_model(tmp_path / "cnn.onnx", size=(16, 16))
    build_site(other, out, title="Insects and pets")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["title"] == "Insects and pets" and manifest["model"]["file"] == "cnn.onnx"
    assert sorted(p.name for p in out.glob("*.onnx")) == ["cnn.onnx"]


def test_a_file_that_is_not_a_model_is_refused_before_anything_is_written(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    result = run("web", bad, "--out", tmp_path / "site")
    assert result.exit_code == 1 and result.output.startswith(f"Error: {bad}")
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("name", ["index.html", "page.js", "app.css", "web/web.js", "web/preprocess.js"])
def test_the_page_files_ship_in_the_package(name):
    from importlib import resources

    assert (resources.files("edge_infer") / "static" / name).is_file()

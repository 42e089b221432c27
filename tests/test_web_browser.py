"""The ``edge-infer web`` page in Debian's headless chromium, served as static files on 127.0.0.1.

Tiers, as for export's parity (issue #26):

* preprocessing: on lossless PNGs the page's uint8 tensor (``window.edgeInfer.preprocess``: the
  browser's decode, then preprocess.js) equals ``edge_infer.preprocess.prepare`` within 1 grey
  level on every pixel, for each resize and pad mode (preprocess.js ports Pillow 13's fixed-point
  arithmetic and pass order, so on these it is exact; the printed differences say so).
* fp32: the page's probabilities on those PNGs have the Python runtime's top-1 on every image and
  differ by at most 1e-3.
* JPEG photos (browsers decode JPEG with their own IDCT and upsampling, Python with a reduced
  DCT scale): top-1 equal wherever Python's top-2 margin is at least ``agreement.CONFIDENT_MARGIN``,
  max |dp| printed.
* int8: the page's int8 answers against onnxruntime's int8 in Python, gated as ``bench`` gates a
  second backend (every confident image agrees), agreement printed.
* canaries: on load the page runs the file's canaries and judges them by ``edge-infer verify``'s
  rule; it says PASS for a faithful file, FAIL for one whose weights were changed after export,
  the same verdict as ``edge_infer.verify`` in Python, and that a file without canaries has none.

The model is a small random CNN (tests/web_site.py): every pixel moves its output, and no
training run is needed. Run with ``-s`` to see the printed numbers.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import tiny_models
import web_site
from conftest import chromium_path, require
from PIL import Image, ImageDraw

from edge_infer import Classifier
from edge_infer.agreement import CONFIDENT_MARGIN, compare
from edge_infer.preprocess import prepare
from edge_infer.verify import verify_model
from edge_infer.web import build_site

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

WAIT_MS = 20_000
SIZE = (24, 32)  # (height, width): not square, so crop and pad differ from squish
MODES = [("crop", "reflection"), ("squish", "reflection"), ("pad", "zeros"), ("pad", "border"),
         ("pad", "reflection")]


@pytest.fixture(scope="module")
def ort_dist() -> Path:
    require(web_site.ORT_DIST.is_dir(), "onnxruntime-web (npm)", web_site.ORT_INSTALL)
    return web_site.ORT_DIST


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=web_site.CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console_errors() -> list[str]:
    return []


def site_page(browser, folder: Path, errors: list[str]) -> Iterator:
    with web_site.serving(folder) as url:
        context = browser.new_context(viewport={"width": 960, "height": 720})
        page = context.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        web_site.open_site(page, url)
        yield page
        context.close()


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[Path]:
    """Lossless images that stress every step: noise (each pixel matters to the resize), a smooth
    gradient, very wide and very tall (pad bands longer than the image), greyscale, palette,
    one pixel, and one already at the model's size."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(26)
    noise = lambda w, h: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # noqa: E731
    yy, xx = np.mgrid[0:90, 0:130]
    gradient = np.stack([xx * 255 // 129, yy * 255 // 89, (xx + yy) % 256], axis=2).astype(np.uint8)
    images = {
        "noise-61x47": noise(61, 47), "noise-300x200": noise(300, 200), "noise-199x301": noise(199, 301),
        "wide-90x3": noise(90, 3), "tall-4x70": noise(4, 70), "pixel-1x1": noise(1, 1),
        "exact-32x24": noise(32, 24), "gradient-130x90": Image.fromarray(gradient),
        "grey-50x80": Image.fromarray(rng.integers(0, 256, (80, 50), dtype=np.uint8), "L"),
        "palette-64x40": noise(64, 40).quantize(16),
    }
    paths = []
    for name, img in images.items():
        paths.append(folder / f"{name}.png")
        img.save(paths[-1])
    return paths


def photo(path: Path, rng: np.random.Generator, orientation: int = 1) -> Path:
    """A photo-like JPEG: a smooth background, a few soft shapes, sensor noise, quality 90."""
    w, h = int(rng.integers(160, 400)), int(rng.integers(160, 400))
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(xx * rng.uniform(2, 6)), np.cos(yy * rng.uniform(2, 6)), xx * yy], 2)
    img = Image.fromarray(((base * 0.5 + 0.5) * 200 + 20).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, 60))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, (h, w, 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90, exif=exif.tobytes())
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    return [photo(folder / f"photo{i}.jpg", rng, orientation=(1, 6, 3, 8)[i % 4]) for i in range(24)]


@pytest.mark.parametrize(("resize", "pad_mode"), MODES)
def test_page_preprocessing_and_fp32_equal_python_on_pngs(browser, ort_dist, pngs, tmp_path, console_errors,
                                                          resize, pad_mode):
    model = web_site.cnn_model(tmp_path / "cnn.onnx", size=SIZE, resize=resize, pad_mode=pad_mode)
    build_site(model, tmp_path / "site", ort=str(ort_dist))
    clf = Classifier.load(model, threads=1)
    diffs, tops, dps = {}, [], []
    for page in site_page(browser, tmp_path / "site", console_errors):
        for path in pngs:
            want = prepare(path, clf.info.preprocess)
            got = web_site.page_tensor(page, path).reshape(want.shape)
            diffs[path.stem] = int(np.abs(got.astype(int) - want).max())
            ours, theirs = web_site.page_probabilities(page, path), clf.probabilities(want[None])[0]
            tops.append((path.stem, int(ours.argmax()), int(theirs.argmax())))
            dps.append(float(np.abs(ours - theirs).max()))
    print(f"\n{resize}/{pad_mode}: max grey-level difference per image {diffs}; fp32 max |dp| {max(dps):.2e}")
    assert max(diffs.values()) <= 1, diffs
    assert all(a == b for _, a, b in tops), tops
    assert max(dps) <= 1e-3
    assert console_errors == []


def test_jpeg_photos_fp32_agree_where_python_is_confident(browser, ort_dist, photos, tmp_path, console_errors):
    model = web_site.cnn_model(tmp_path / "cnn.onnx", size=(64, 64), seed=3)
    build_site(model, tmp_path / "site", ort=str(ort_dist))
    clf = Classifier.load(model, threads=1)
    theirs = np.stack([clf.probabilities(prepare(p, clf.info.preprocess)[None])[0] for p in photos])
    for page in site_page(browser, tmp_path / "site", console_errors):
        ours = np.stack([web_site.page_probabilities(page, p) for p in photos])
    report = compare(theirs, ours)
    print(f"\nJPEG fp32, page vs Python: {report}")
    assert report.confident >= len(photos) // 4  # the check checks something
    assert report.confident_same == report.confident, report


def test_int8_page_agrees_with_python_int8(browser, ort_dist, photos, pngs, tmp_path, console_errors):
    fp32 = web_site.cnn_model(tmp_path / "cnn.onnx", size=(64, 64), seed=3)
    pre = Classifier.load(fp32, threads=1).info.preprocess
    calibration = np.stack([prepare(p, pre) for p in photos[:12]])
    int8 = web_site.int8_model(fp32, tmp_path / "cnn-int8.onnx", calibration)
    build_site(int8, tmp_path / "site", ort=str(ort_dist))
    clf = Classifier.load(int8, threads=1)
    images = photos + pngs
    theirs = np.stack([clf.probabilities(prepare(p, pre)[None])[0] for p in images])
    for page in site_page(browser, tmp_path / "site", console_errors):
        ours = np.stack([web_site.page_probabilities(page, p) for p in images])
    report = compare(theirs, ours)
    print(f"\nint8, page vs Python int8 (margin {CONFIDENT_MARGIN}): {report}")
    assert report.confident_same == report.confident, report


def with_canaries(model: Path, *, fp32: Path | None = None) -> Path:
    pixels = np.random.default_rng(5).integers(0, 256, (40, *Classifier.load(model).info.preprocess.size, 3),
                                               dtype=np.uint8)
    return tiny_models.add_canaries(model, pixels, fp32=fp32)


def altered(model: Path, out: Path) -> Path:
    """``model`` with its first conv's weights scaled by 1.05 after its canaries were stored, as
    tests/test_verify.py makes its broken file."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model))
    w1 = next(t for t in proto.graph.initializer if t.name == "w1")
    w1.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w1) * np.float32(1.05), "w1"))
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("kind", ["fp32", "int8", "altered"])
def test_the_page_runs_the_canaries_on_load(browser, ort_dist, photos, tmp_path, console_errors, kind):
    fp32 = with_canaries(web_site.cnn_model(tmp_path / "cnn.onnx", size=SIZE, seed=3))
    if kind == "int8":
        calibration = np.stack([prepare(p, Classifier.load(fp32).info.preprocess) for p in photos[:12]])
        model = with_canaries(web_site.int8_model(fp32, tmp_path / "int8.onnx", calibration), fp32=fp32)
    else:
        model = fp32 if kind == "fp32" else altered(fp32, tmp_path / "altered.onnx")
    python = next(c for c in verify_model(str(model), threads=1)[1] if c.name == "onnxruntime")
    build_site(model, tmp_path / "site", ort=str(ort_dist))
    for page in site_page(browser, tmp_path / "site", console_errors):
        verdict = page.evaluate("window.edgeInfer.canaries()")
        line = page.locator("#canaries").inner_text()
    print(f"\n{kind}: page {verdict}\n  python: {python.line()}")
    assert verdict["passed"] is python.passed is (kind != "altered")
    assert verdict["count"] == python.canaries and verdict["tolerance"] == python.tolerance
    assert ("PASS" if python.passed else "FAIL") in line and f"{python.canaries} canaries" in line
    assert console_errors == []


def test_a_file_without_canaries_says_so(colour_page):
    sync_api.expect(colour_page.locator("#canaries")).to_contain_text("carries no canaries")
    assert colour_page.evaluate("window.edgeInfer.canaries()") is None


@pytest.fixture(scope="module")
def colour_site(colour_model, ort_dist, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("colour-site")
    build_site(colour_model, folder, ort=str(ort_dist), title="Colours")
    return folder


@pytest.fixture
def colour_page(browser, colour_site, console_errors):
    yield from site_page(browser, colour_site, console_errors)


def test_pick_a_photo_and_see_the_label(colour_page, console_errors, colour_images, tmp_path):
    page = colour_page
    sync_api.expect(page.locator("#model")).to_contain_text("3 labels", timeout=WAIT_MS)
    sync_api.expect(page.locator("h1")).to_have_text("Colours")
    page.set_input_files("#file", str(colour_images["green"]))
    sync_api.expect(page.locator("#label")).to_have_text("green", timeout=WAIT_MS)
    sync_api.expect(page.locator("#topk li")).to_have_count(3)
    sync_api.expect(page.locator("#timing")).to_contain_text("in this browser")
    shot = tmp_path / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert console_errors == []


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation_is_applied(colour_page, colour_model, tmp_path, orientation):
    """A JPEG stored turned, with its EXIF orientation: the page's tensor is Python's (upright),
    within what two JPEG decoders differ by, and far from the tensor of the stored pixels."""
    a = np.zeros((30, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    a[:10] = (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.jpg"
    Image.fromarray(a).save(path, quality=95, exif=exif.tobytes())
    pre = Classifier.load(colour_model, threads=1).info.preprocess
    want = prepare(path, pre).astype(int)
    stored = prepare(path, replace(pre, exif_transpose=False)).astype(int)
    got = web_site.page_tensor(colour_page, path).reshape(want.shape).astype(int)
    assert np.abs(got - want).mean() < 4
    assert np.abs(got - stored).mean() > 40


@pytest.mark.parametrize("name", ["notes.txt", "photo.heic"])
def test_a_file_the_browser_cannot_decode_gets_a_clear_message(colour_page, console_errors, tmp_path, name):
    path = tmp_path / name
    if name.endswith(".heic"):  # chromium has no HEIC decoder
        pytest.importorskip("pillow_heif")
        Image.new("RGB", (40, 30), "red").save(path)
    else:
        path.write_text("not a picture")
    colour_page.set_input_files("#file", str(path))
    alert = colour_page.get_by_role("alert")
    sync_api.expect(alert).to_be_visible(timeout=WAIT_MS)
    sync_api.expect(alert).to_contain_text(f"{name}: this browser cannot decode this file")
    sync_api.expect(colour_page.locator("#result")).to_be_hidden()
    assert console_errors == []


JS_FIT = """async ([b64, w, h, pre]) => {
  const { fitToSize } = await import("./preprocess.js");
  const rgb = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const t = fitToSize(rgb, w, h, pre);
  let s = ""; for (let i = 0; i < t.length; i += 8192) s += String.fromCharCode(...t.subarray(i, i + 8192));
  return btoa(s);
}"""


def test_the_port_of_fit_to_size_is_exact_on_random_sizes(colour_page):
    """preprocess.js alone (no decoder in between) against ``fit_to_size`` on 150 random image and
    model sizes in every mode: equal on every pixel, which pins Pillow's fixed-point rounding and
    its pass order (a Pillow that changes either fails here first)."""
    from edge_infer.metadata import Preprocess
    from edge_infer.preprocess import fit_to_size

    rng = np.random.default_rng(2026)
    worst = []
    for i in range(150):
        w, h = (int(v) for v in rng.integers(1, 240, 2))
        pre = Preprocess(size=(int(rng.integers(4, 160)), int(rng.integers(4, 160))), resize=MODES[i % 5][0],
                         pad_mode=MODES[i % 5][1])
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = fit_to_size(Image.fromarray(rgb), pre)
        b64 = base64.b64encode(rgb.tobytes()).decode()
        got = np.frombuffer(base64.b64decode(colour_page.evaluate(JS_FIT, [b64, w, h, pre.to_dict()])), np.uint8)
        worst.append(int(np.abs(got.reshape(want.shape).astype(int) - want).max()))
    assert max(worst) == 0, [(i, d) for i, d in enumerate(worst) if d]

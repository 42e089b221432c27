"""edge_infer.preprocess without torch: the colour rule for every Pillow mode, EXIF, corrupt input,
the resize geometry, and how far fast (JPEG draft) decoding may move the model's pixels.

fastai-exactness of ``fit_to_size`` is in test_preprocess_fastai.py (needs fastai).
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_infer import ImageError
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import fit_to_size, load_image, prepare, to_rgb

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _pixels(img: Image.Image) -> list[tuple[int, int, int]]:
    """Row-major RGB tuples of a small image."""
    return [tuple(int(v) for v in px) for px in np.asarray(img).reshape(-1, 3)]


def _save(img: Image.Image, path: Path, fmt: str, **params) -> Path:
    img.save(path, fmt, **params)
    with Image.open(path) as back:  # the file really holds the mode under test
        assert back.mode == img.mode
    return path


def _palette() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    return img


def _composite(value: float, alpha: int, background: int = 255) -> float:
    return value * alpha / 255 + background * (1 - alpha / 255)


def _mode_case(mode: str, tmp_path: Path) -> tuple[Path, list[tuple[float, float, float]]]:
    """An image file in ``mode`` and the RGB pixels the colour rule promises for it."""
    path = tmp_path / f"{mode.replace(';', '_')}"
    if mode == "1":
        img = Image.new("1", (2, 1))
        img.putdata([0, 255])
        return _save(img, path.with_suffix(".png"), "PNG"), [BLACK, WHITE]
    if mode == "L":
        img = Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L")
        return _save(img, path.with_suffix(".png"), "PNG"), [BLACK, (77, 77, 77), WHITE]
    if mode == "LA":
        img = Image.new("LA", (3, 1))
        img.putdata([(100, 0), (100, 128), (100, 255)])
        half = _composite(100, 128)
        return _save(img, path.with_suffix(".png"), "PNG"), [WHITE, (half,) * 3, (100, 100, 100)]
    if mode == "P":
        return _save(_palette(), path.with_suffix(".png"), "PNG"), [(255, 0, 0), (0, 255, 0), (10, 20, 30)]
    if mode == "P with transparency":
        return (_save(_palette(), path.with_suffix(".png"), "PNG", transparency=1),
                [(255, 0, 0), WHITE, (10, 20, 30)])
    if mode == "RGBA":
        img = Image.new("RGBA", (3, 1))
        img.putdata([(200, 0, 0, 0), (200, 0, 0, 128), (200, 0, 0, 255)])
        half = (_composite(200, 128), _composite(0, 128), _composite(0, 128))
        return _save(img, path.with_suffix(".png"), "PNG"), [WHITE, half, (200, 0, 0)]
    if mode == "CMYK":  # Pillow's naive conversion, no ICC: R = (255 - C) * (255 - K) / 255
        img = Image.new("CMYK", (3, 1))
        img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 128)])
        return _save(img, path.with_suffix(".tif"), "TIFF"), [WHITE, (0, 255, 255), (127, 127, 127)]
    if mode == "I;16":  # 0..65535 -> 0..255 (divide by 257)
        img = Image.fromarray(np.array([[0, 25700, 65535]], np.uint16))
        return _save(img, path.with_suffix(".png"), "PNG"), [BLACK, (100, 100, 100), WHITE]
    if mode == "I":  # as I;16, values outside 0..65535 clipped
        img = Image.fromarray(np.array([[-5, 25700, 70000]], np.int32))
        return _save(img, path.with_suffix(".tif"), "TIFF"), [BLACK, (100, 100, 100), WHITE]
    if mode == "F":  # 0..1 floats, clipped
        img = Image.fromarray(np.array([[-1.0, 0.2, 2.0]], np.float32))
        return _save(img, path.with_suffix(".tif"), "TIFF"), [BLACK, (51, 51, 51), WHITE]
    raise AssertionError(mode)


MODES = ["1", "L", "LA", "P", "P with transparency", "RGBA", "CMYK", "I;16", "I", "F"]


@pytest.mark.parametrize("mode", MODES)
def test_every_pillow_mode_follows_the_colour_rule(tmp_path, mode: str) -> None:
    path, expected = _mode_case(mode, tmp_path)
    img = load_image(path)
    assert img.mode == "RGB"
    np.testing.assert_allclose(np.asarray(img, np.float64).reshape(-1, 3), np.array(expected), atol=1.0)


@pytest.mark.parametrize("background", [BLACK, (0, 128, 255)])
def test_transparency_goes_onto_the_models_background(background) -> None:
    img = Image.new("RGBA", (2, 1))
    img.putdata([(200, 0, 0, 0), (200, 0, 0, 255)])
    assert _pixels(to_rgb(img, background=background)) == [background, (200, 0, 0)]


def test_an_animated_gif_uses_its_first_frame(tmp_path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    assert set(_pixels(load_image(path))) == {(255, 0, 0)}


def _two_colour_jpeg(path: Path, size: tuple[int, int], orientation: int | None) -> Path:
    """Left half red, right half blue, as stored; ``orientation`` in the EXIF block."""
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[:, : size[0] // 2, 0] = 255
    a[:, size[0] // 2:, 2] = 255
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(a).save(path, "JPEG", quality=95, exif=exif)
    return path


def test_exif_orientation_6_is_applied(tmp_path) -> None:
    """Orientation 6: the camera was turned; show the stored image rotated 90 degrees clockwise."""
    path = _two_colour_jpeg(tmp_path / "turned.jpg", (40, 20), orientation=6)
    img = load_image(path)
    assert img.size == (20, 40)  # (width, height): now portrait
    a = np.asarray(img).astype(int)
    assert a[:15, :, 0].min() > 200 and a[:15, :, 2].max() < 60  # the left (red) half is on top
    assert a[25:, :, 2].min() > 200 and a[25:, :, 0].max() < 60


def test_exif_orientation_can_be_ignored(tmp_path) -> None:
    path = _two_colour_jpeg(tmp_path / "turned.jpg", (40, 20), orientation=6)
    assert load_image(path, exif_transpose=False).size == (40, 20)


def test_fast_decode_of_a_turned_photo_keeps_the_right_orientation(tmp_path) -> None:
    """The draft size is asked for in stored orientation, the fit in displayed orientation."""
    path = _two_colour_jpeg(tmp_path / "big.jpg", (2000, 1000), orientation=6)
    pre = Preprocess(size=(224, 224))
    assert load_image(path, draft_for=pre).size == (500, 1000)  # 1/2 scale still covers 2 x 224
    fast, full = prepare(path, pre, fast_decode=True), prepare(path, pre, fast_decode=False)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 1.0


def _corrupt(case: str, tmp_path: Path, jpeg: bytes, png: bytes):
    if case == "missing":
        return tmp_path / "nope.jpg"
    if case == "folder":
        return tmp_path
    if case == "zero-size array":
        return np.zeros((0, 4, 3), np.uint8)
    if case == "float array":
        return np.zeros((4, 4, 3), np.float32)
    if case == "two-channel array":
        return np.zeros((4, 4, 2), np.uint8)
    if case == "empty bytes":
        return b""
    path = tmp_path / "x.bin"
    data = {"empty": b"", "not an image": b"%PDF-1.4 hello\n" * 10, "truncated JPEG": jpeg[: len(jpeg) // 2],
            "truncated PNG": png[: len(png) // 2]}[case]
    path.write_bytes(data)
    return path


CORRUPTIONS = {
    "missing": "no such file",
    "folder": "is a folder, not an image",
    "empty": "empty file",
    "empty bytes": "empty file",
    "not an image": "not an image (Pillow cannot identify the format)",
    "truncated JPEG": "truncated or corrupt image data",
    "truncated PNG": "truncated or corrupt image data",
    "zero-size array": "zero-size image (4x0)",
    "float array": "arrays must be uint8, got float32",
    "two-channel array": "expected an HxW, HxWx3 (RGB) or HxWx4 (RGBA) array, got shape (4, 4, 2)",
}


@pytest.fixture(scope="module")
def encoded() -> tuple[bytes, bytes]:
    """A noisy 256x192 image as JPEG and PNG bytes (noise: no tiny, fully-buffered files)."""
    a = np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    out = []
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, fmt)
        out.append(buf.getvalue())
    return out[0], out[1]


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_every_corruption_is_an_image_error_naming_the_source(tmp_path, encoded, case: str) -> None:
    source = _corrupt(case, tmp_path, *encoded)
    name = str(source) if isinstance(source, Path) else "<array>" if isinstance(source, np.ndarray) else "<bytes>"
    with pytest.raises(ImageError) as err:
        load_image(source)
    assert str(err.value).startswith(f"{name}: ") and CORRUPTIONS[case] in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind, name", [("path", "wide.png"), ("bytes", "<bytes>"), ("PIL image", "wide.png")])
def test_the_pixel_limit_refuses_big_images(tmp_path, kind: str, name: str) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 100)).save(path)
    source = path.read_bytes() if kind == "bytes" else Image.open(path) if kind == "PIL image" else path
    with pytest.raises(ImageError, match=rf"{name}: 200x100 is 20,000 pixels, over the limit of 19,999 "):
        load_image(source, max_pixels=19_999)
    assert load_image(source, max_pixels=20_000).size == (200, 100)


def test_a_file_object_is_named_by_its_name(tmp_path, encoded) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(encoded[0][:400])
    with open(path, "rb") as f, pytest.raises(ImageError, match=f"^{path}: "):
        load_image(f)


def test_an_unreadable_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot read an image from int"):
        load_image(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(8, 6), (8, 6, 1), (8, 6, 3), (8, 6, 4)])
def test_arrays_of_every_accepted_shape_become_rgb(shape) -> None:
    img = load_image(np.full(shape, 255, np.uint8))
    assert img.mode == "RGB" and img.size == (6, 8)


# ------------------------------------------------------------------------ the resize geometry


def _stripes(width: int, height: int, colours) -> Image.Image:
    """Vertical stripes of equal width, one per colour."""
    a = np.zeros((height, width, 3), np.uint8)
    for i, colour in enumerate(colours):
        a[:, i * width // len(colours):(i + 1) * width // len(colours)] = colour
    return Image.fromarray(a)


def test_size_is_height_then_width() -> None:
    out = fit_to_size(Image.new("RGB", (100, 100)), Preprocess(size=(20, 40)))
    assert out.shape == (20, 40, 3) and out.dtype == np.uint8


def test_crop_keeps_the_centre() -> None:
    img = _stripes(90, 30, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    assert set(_pixels(fit_to_size(img, Preprocess(size=(30, 30), resize="crop")))) == {(0, 255, 0)}


def test_squish_keeps_everything() -> None:
    img = _stripes(90, 30, [(255, 0, 0), (0, 0, 255)])
    out = fit_to_size(img, Preprocess(size=(30, 30), resize="squish"))
    assert tuple(out[15, 2]) == (255, 0, 0) and tuple(out[15, 27]) == (0, 0, 255)


@pytest.mark.parametrize("pad_mode, band", [("zeros", BLACK), ("border", WHITE), ("reflection", WHITE)])
def test_pad_fits_the_whole_image_and_fills_the_rest(pad_mode: str, band) -> None:
    out = fit_to_size(Image.new("RGB", (60, 30), WHITE), Preprocess(size=(30, 30), resize="pad", pad_mode=pad_mode))
    assert out.shape == (30, 30, 3)
    assert set(_pixels(Image.fromarray(out[:5]))) == {band}  # the band above the image
    assert set(_pixels(Image.fromarray(out[12:18]))) == {WHITE}


# -------------------------------------------------------------------------------- fast decode


@pytest.fixture(scope="module")
def photo_1080p() -> bytes:
    """scikit-learn's china.jpg (a real photo, 640x427) upscaled to a 1920x1080 JPEG."""
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.origin, "scikit-learn (the dev group) ships the sample photo"
    china = Path(spec.origin).parent / "datasets" / "images" / "china.jpg"
    buf = io.BytesIO()
    Image.open(china).convert("RGB").resize((1920, 1080), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# Measured (docs/model-format.md): mean 0.39 / max 5 grey levels for crop, 0.26 / 4 for squish.
FAST_DECODE_MEAN_TOLERANCE = 1.0
FAST_DECODE_MAX_TOLERANCE = 16


@pytest.mark.parametrize("resize, decoded", [("crop", (960, 540)), ("squish", (960, 540)), ("pad", (480, 270))])
def test_fast_decode_stays_close_to_full_decode_on_a_photo(photo_1080p, resize: str, decoded) -> None:
    """pad fits the long side (2 x 224 wide: 1/4 scale); crop and squish the short one (1/2)."""
    pre = Preprocess(size=(224, 224), resize=resize, pad_mode="zeros")
    assert load_image(photo_1080p, draft_for=pre).size == decoded  # really decoded at reduced scale
    diff = np.abs(prepare(photo_1080p, pre, fast_decode=True).astype(int)
                  - prepare(photo_1080p, pre, fast_decode=False).astype(int))
    assert diff.mean() <= FAST_DECODE_MEAN_TOLERANCE and diff.max() <= FAST_DECODE_MAX_TOLERANCE


@pytest.mark.parametrize("pad_mode", ["border", "reflection"])
def test_edge_copying_pad_modes_always_decode_in_full(photo_1080p, pad_mode: str) -> None:
    pre = Preprocess(size=(224, 224), resize="pad", pad_mode=pad_mode)
    assert load_image(photo_1080p, draft_for=pre).size == (1920, 1080)


def test_fast_decode_leaves_small_photos_alone(photo_1080p) -> None:
    small = io.BytesIO()
    Image.open(io.BytesIO(photo_1080p)).resize((640, 360)).save(small, "JPEG")
    pre = Preprocess(size=(224, 224))
    assert load_image(small.getvalue(), draft_for=pre).size == (640, 360)  # 1/2 would be < 2 x 224


# -- deep (16-bit, 32-bit, float) images: exact, and without a float64 copy of the whole image ----

def _float_rule(a: np.ndarray, mode: str) -> np.ndarray:
    """The colour rule written the obvious way, over the whole image in float64."""
    a = a.astype(np.float64)
    a = np.clip(a, 0.0, 1.0) * 255.0 if mode == "F" else np.clip(a, 0, 65535) / 257.0
    return np.rint(a).astype(np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_images_match_the_float_rule_across_bands(monkeypatch, mode: str) -> None:
    """Every value 0..65535 (and out-of-range ones) over several bands, against the obvious code."""
    import edge_infer.preprocess as pp

    monkeypatch.setattr(pp, "_DEEP_BAND_PIXELS", 1000)  # 1000 // 300 = 3 rows a band: many bands
    rng = np.random.default_rng(0)
    if mode == "I;16":
        a = np.arange(300 * 220, dtype=np.uint16).reshape(220, 300)
    elif mode == "I":
        a = rng.integers(-70_000, 140_000, (220, 300), dtype=np.int32)
    else:
        a = rng.uniform(-0.5, 1.5, (220, 300)).astype(np.float32)
    img = Image.fromarray(a)
    assert img.mode == mode
    got = np.asarray(to_rgb(img))
    assert got.shape == (220, 300, 3)
    np.testing.assert_array_equal(got[..., 0], _float_rule(a, mode))
    np.testing.assert_array_equal(got[..., 0], got[..., 2])


def test_a_big_16_bit_image_converts_without_a_float64_copy() -> None:
    """4000x4000 16-bit: a float64 copy is 128 MB; the banded path's numpy peak is the 16 MB
    output plus one band (tracemalloc sees numpy's buffers, not Pillow's)."""
    import tracemalloc

    img = Image.fromarray(np.full((4000, 4000), 30000, np.uint16))
    tracemalloc.start()
    try:
        rgb = to_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rgb.getpixel((3999, 3999)) == (117, 117, 117)
    assert peak < 48e6, f"numpy peaked at {peak / 1e6:.0f} MB"

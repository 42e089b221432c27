"""The only code that touches pixels: decode an image, then fit it to the model's input size.

Training (``train/``) decodes with ``load_image`` too, so the model is trained on exactly the
pixels it will see in production. ``fit_to_size`` re-implements fastai's ``Resize`` (item
transform, validation split) with Pillow and numpy only; ``tests/test_preprocess_fastai.py``
checks it against fastai pixel for pixel.

The colour rule, for every Pillow mode (``to_rgb``):

* ``RGB`` as-is; ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` through Pillow's
  ``convert("RGB")`` (CMYK without an ICC transform: Pillow's naive inversion);
* anything with transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, ``P``/``L``/``RGB``
  with a ``transparency`` entry) is composited onto ``background`` (white unless the model says
  otherwise), so a transparent logo looks as it does on a web page, not black;
* 16-bit integer modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) and ``I`` are taken as
  0..65535 and scaled to 0..255 (divide by 257), ``F`` as 0..1 floats (the float-TIFF
  convention); values outside are clipped;
* animated images (GIF, APNG, WebP) use their first frame.

Phone formats: AVIF is Pillow's own (a Pillow built with libavif, as the wheels of 11.3 and later
are); HEIC/HEIF, what iPhones save by default, needs the ``heif`` extra (``pillow-heif``), whose
Pillow opener is registered when this module is imported, so everything that opens images with
Pillow in this process (``serve``'s format sniffing, training's cache) reads them too. pillow-heif
hands over a HEIC photo already turned upright (the container's rotation, which HEIF readers must
apply) with its EXIF orientation reset to 1, so it is upright whatever ``exif_transpose`` says;
AVIF keeps its orientation in EXIF and follows ``exif_transpose`` as a JPEG does. Without a reader,
either format gets a one-line error that says what is missing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ContextManager, Iterator, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, NotAnImage, first_line
from .metadata import Preprocess

__all__ = ["ImageSource", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_BYTES", "Probe", "describe", "named_bytes", "probe", "load_image", "to_rgb",
           "fit_to_size", "prepare", "HEIF_READABLE", "HEIF_EXTRA_HINT"]

ImageSource = Union[str, os.PathLike, bytes, bytearray, IO[bytes], Image.Image, np.ndarray]

# 50 MP: a 48 MP phone photo passes, a 20000 x 20000 PNG bomb does not. Pillow's own guard
# (about 179 MP) is still there behind ours.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 20_000_000  # edge-infer serve's largest upload: a 48 MP JPEG is about 15 MB

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# Bytes per pixel as Pillow holds each mode (for Probe.decode_bytes); anything unlisted counts as 4.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2,
               "I;16N": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
_DRAFT_MARGIN = 2  # see _draft
_DEEP_BAND_PIXELS = 1 << 20  # see _deep_to_l: ~8 MB of int64 work space per band
HEIF_EXTRA_HINT = 'pip install "edge-infer[heif]"'
# ISO-BMFF major brands (a file's first 12 bytes: a box size, 'ftyp', the brand) of HEIF still
# images (HEVC-coded and generic), and of AVIF, which Pillow reads when built with libavif.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")
_NUMPY_PAD: dict[str, Literal["constant", "edge", "reflect"]] = {  # fastai pad_mode -> np.pad mode
    "zeros": "constant", "border": "edge", "reflection": "reflect"}


def _register_heif() -> bool:
    """Teach Pillow HEIC/HEIF when the ``heif`` extra is installed; False when it is not."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


HEIF_READABLE = _register_heif()


def describe(source: ImageSource) -> str:
    """How an error message names an image: its path where there is one."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return str(getattr(source, "name", "") or "<file object>")


def named_bytes(data: bytes, name: str) -> io.BytesIO:
    """``data`` as a file object that an ``ImageError`` names ``name`` (``describe`` reads it)."""
    source = io.BytesIO(data)
    source.name = name
    return source


@dataclass(frozen=True)
class Probe:
    """An upload read as far as its header: what a server needs to admit it before decoding.

    ``decode_bytes`` is an upper estimate of the memory one decode peaks at: the image in its
    own mode, the 8-bit grey copy of a deep image (``to_rgb``) and the RGB result, plus a
    quarter for the decoder's own buffers (a 7000x7000 16-bit PNG: 367 MB estimated, 349 MB
    measured over the process's RSS before it).
    """

    name: str
    data: bytes = field(repr=False)
    format: str
    size: tuple[int, int]
    mode: str
    decode_bytes: int


def probe(data: bytes, name: str) -> Probe:
    """Read the header of ``data`` (an upload that errors call ``name``), not its pixels.

    Raises ``NotAnImage`` for bytes in no format Pillow knows and ``ImageError`` for an empty
    upload or a broken header; broken pixel data is found when ``load_image`` decodes it.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    with _PILLOW_WARNINGS.logged_for(name), _identify(io.BytesIO(data), name) as img:
        (w, h), mode = img.size, img.mode
        deep = 1 if mode in _SIXTEEN_BIT_MODES or mode == "F" else 0
        need = w * h * (_MODE_BYTES.get(mode, 4) + deep + 3) * 5 // 4
        return Probe(name, bytes(data), img.format or "", (w, h), mode, need)


class _PillowWarnings:
    """Pillow's warnings while an image decodes, as one logged line each (logger
    ``edge_infer.preprocess``: ``photo.tif: decoded, but Pillow says: ...``), not a
    ``UserWarning`` and its source line on stderr; ``DecompressionBombWarning`` is dropped
    (``max_pixels`` speaks). ``catch_warnings`` is process-wide, not thread-safe, and decodes run
    in threads: so one hook stays while any decode runs and hands each Pillow warning to the
    thread that raised it; other warnings go where they went before."""

    def __init__(self) -> None:
        self._lock, self._users, self._local = threading.Lock(), 0, threading.local()
        self._saved: Any = None
        self._show: Any = None

    @contextlib.contextmanager
    def logged_for(self, name: str) -> Iterator[None]:
        said: list[str] = []
        self._local.said = said
        with self._lock:
            if self._users == 0:
                self._saved, self._show = warnings.catch_warnings(), warnings.showwarning
                self._saved.__enter__()
                warnings.filterwarnings("always", module="PIL")  # each file's, not only the first
                warnings.showwarning = self._route
            self._users += 1
        try:
            yield
        finally:
            self._local.said = None
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._saved.__exit__(None, None, None)
            for message in dict.fromkeys(said):
                _log.warning("%s: decoded, but Pillow says: %s", name, message)

    def _route(self, message: Any, category: type, filename: str, lineno: int, file: Any = None,
               line: Any = None) -> None:
        said = getattr(self._local, "said", None)
        if said is None or "PIL" not in Path(filename).parts:
            self._show(message, category, filename, lineno, file, line)
        elif not issubclass(category, Image.DecompressionBombWarning):
            said.append(first_line(message))


_log = logging.getLogger("edge_infer.preprocess")
_PILLOW_WARNINGS = _PillowWarnings()


def load_image(source: ImageSource, *, exif_transpose: bool = True,
               background: tuple[int, int, int] = (255, 255, 255),
               max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_for: Preprocess | None = None) -> Image.Image:
    """Decode ``source`` into an RGB Pillow image, or raise ``ImageError`` naming it.

    ``draft_for``, when given, lets a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
    scaling) as long as ``fit_to_size(img, draft_for)`` still downsizes from at least twice the
    model's resolution: several times faster on photos; docs/model-format.md states its effect.
    Pillow's warnings are logged, one line each (``_PillowWarnings``).
    """
    name = describe(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name, background)
    with _PILLOW_WARNINGS.logged_for(name):
        img = _decoded(source, name, max_pixels, draft_for, exif_transpose)
        if exif_transpose:
            img = _exif_transpose(img, name)
        return to_rgb(img, background=background)


def _decoded(source: ImageSource, name: str, max_pixels: int, draft_for: Preprocess | None,
             exif_transpose: bool) -> Image.Image:
    if isinstance(source, Image.Image):
        _check_pixels(source, name, max_pixels)
        return source
    # A file this opens is closed once the pixels are in memory: 100k photos must not wait for the GC.
    with _opened(source, name) as fp:
        img = _identify(fp, name)
        _check_pixels(img, name, max_pixels)
        try:
            if draft_for is not None and img.format == "JPEG":
                _draft(img, draft_for, exif_transpose)
            img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(f"{name}: truncated or corrupt image data ({e})") from None
    return img


def _opened(source: ImageSource, name: str) -> ContextManager[IO[bytes]]:
    """The bytes of ``source`` as a file object; a path is opened here, and closed on leaving."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: empty file")
        try:
            return open(path, "rb")
        except OSError as e:  # permissions, a vanished network file...
            raise ImageError(f"{name}: cannot read the file ({e.strerror or e})") from None
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"{name}: empty file")
        return contextlib.nullcontext(io.BytesIO(source))
    if hasattr(source, "read"):
        return contextlib.nullcontext(source)  # type: ignore[arg-type]
    raise TypeError(f"cannot read an image from {type(source).__name__}; pass a path, bytes, "
                    "a binary file object, a PIL image or a uint8 array")


def _identify(fp: IO[bytes], name: str) -> Image.Image:
    try:
        return Image.open(fp)
    except UnidentifiedImageError:
        brand = _brand(fp)
        if brand in _HEIF_BRANDS and not HEIF_READABLE:
            raise ImageError(f"{name}: a HEIC/HEIF image; reading it needs the heif extra: "
                             f"{HEIF_EXTRA_HINT}") from None
        if brand in _AVIF_BRANDS:
            raise ImageError(f"{name}: an AVIF image, and this Pillow {Image.__version__} was built without "
                             "AVIF support (pip install -U pillow: its wheels read AVIF)") from None
        raise NotAnImage(f"{name}: not an image (Pillow cannot identify the format)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: too many pixels, refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt image header ({e})") from None


def _brand(fp: IO[bytes]) -> bytes | None:
    """An ISO-BMFF file's major brand (HEIF, AVIF...), or None."""
    try:
        fp.seek(0)
        head = fp.read(12)
    except (OSError, ValueError):  # an unseekable stream: say what Pillow said
        return None
    return head[8:12] if head[4:8] == b"ftyp" else None


def _check_pixels(img: Image.Image, name: str, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: zero-size image ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,} "
                         "(a possible decompression bomb; raise max_pixels to allow it)")


def _draft(img: Image.Image, pre: Preprocess, exif_transpose: bool) -> None:
    """Ask libjpeg for the smallest DCT scale that covers twice the model's input size.

    Twice, not once: the final bilinear resize then still averages several decoded pixels, as it
    does after a full decode (1x: up to 23 levels off on a 1080p photo; 2x: up to 5, mean 0.4;
    docs/model-format.md has the measurements). Padding with ``border``/``reflection`` copies
    the image's edge rows across the pad band, and a scaled decode's edge rows are averages, so
    those models always decode in full.
    """
    if pre.resize == "pad" and pre.pad_mode != "zeros":
        return
    rotated = exif_transpose and img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    iw, ih = img.size[::-1] if rotated else img.size  # the size as it will be shown
    w, h = (side * _DRAFT_MARGIN for side in draft_size_for((iw, ih), pre))
    img.draft(None, (h, w) if rotated else (w, h))


def _exif_transpose(img: Image.Image, name: str) -> Image.Image:
    try:
        # exif_transpose copies the whole image even when there is nothing to turn (~1.3 ms of a
        # 9 ms 1080p decode), so look at the tag first; 1 (or none) means "as stored".
        if img.getexif().get(_EXIF_ORIENTATION, 1) not in (2, 3, 4, 5, 6, 7, 8):
            return img
        return ImageOps.exif_transpose(img) or img
    except Exception as e:  # a broken EXIF block must not hide a good image; say what failed
        raise ImageError(f"{name}: unreadable EXIF orientation ({e})") from None


def to_rgb(img: Image.Image, *, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Apply the module's colour rule: any Pillow mode in, 8-bit RGB out."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return _deep_to_l(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _deep_to_l(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit greyscale, a band of rows at a time.

    Band by band so that the extra memory is one band, not a float64 copy of the whole image
    (a 7000x7000 16-bit PNG of 95 KB once peaked at 964 MB here). Integers use exact integer
    arithmetic: ``(v + 128) // 257`` is ``round(v / 257)``, and no v/257 is ever halfway.
    """
    w, h = img.size
    out = np.empty((h, w), dtype=np.uint8)
    rows = max(1, _DEEP_BAND_PIXELS // w)
    for top in range(0, h, rows):
        band = np.asarray(img.crop((0, top, w, min(top + rows, h))))
        if img.mode == "F":
            out[top:top + rows] = np.rint(np.clip(band.astype(np.float64), 0.0, 1.0) * 255.0)
        else:
            v = np.clip(band.astype(np.int64, copy=False), 0, 65535)
            out[top:top + rows] = (v + 128) // 257
    return Image.fromarray(out, "L")


def _array_to_rgb(a: np.ndarray, name: str, background: tuple[int, int, int]) -> Image.Image:
    if a.dtype != np.uint8:
        raise ImageError(f"{name}: arrays must be uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected an HxW, HxWx3 (RGB) or HxWx4 (RGBA) array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"{name}: zero-size image ({a.shape[1]}x{a.shape[0]})")
    mode = "L" if a.ndim == 2 else "RGB" if a.shape[2] == 3 else "RGBA"
    return to_rgb(Image.fromarray(np.ascontiguousarray(a), mode), background=background)


def draft_size_for(image_size: tuple[int, int], pre: Preprocess) -> tuple[int, int]:
    """The smallest decoded (w, h) that still gives ``fit_to_size`` at least full resolution."""
    h, w = pre.size
    iw, ih = image_size
    if pre.resize == "squish":
        return (w, h)
    fit = max if pre.resize == "crop" else min
    # crop keeps the largest region of the target aspect; scale so that region is >= (w, h)
    scale = fit(w / iw, h / ih)
    return (max(1, int(np.ceil(iw * scale))), max(1, int(np.ceil(ih * scale))))


def fit_to_size(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """fastai's validation ``Resize(size, method, pad_mode)`` on an RGB image -> uint8 [H, W, 3].

    A line-by-line port of fastai's ``Resize.encodes`` + ``_do_crop_pad`` for PIL images (centre
    position, ``int()`` truncation, crop-then-pad, Pillow bilinear resize), so the pixels match.
    """
    th, tw = pre.size
    w, h = img.size
    if pre.resize == "squish":
        crop_w, crop_h, left, top = w, h, 0, 0
    else:
        wider = (w / tw < h / th) if pre.resize == "crop" else (w / tw > h / th)
        m = w / tw if wider else h / th
        crop_w, crop_h = int(m * tw), int(m * th)
        left, top = int(0.5 * (w - crop_w)), int(0.5 * (h - crop_h))
    img = _crop_pad(img, (crop_w, crop_h), (left, top), pre.pad_mode)
    if img.size != (tw, th):
        img = img.resize((tw, th), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _crop_pad(img: Image.Image, size: tuple[int, int], tl: tuple[int, int], pad_mode: str) -> Image.Image:
    (sw, sh), (l, t), (w, h) = size, tl, img.size
    if (l, t, l + sw, t + sh) == (0, 0, w, h):
        return img
    if l >= 0 or t >= 0 or l + sw <= w or t + sh <= h:
        img = img.crop((max(l, 0), max(t, 0), min(l + sw, w), min(t + sh, h)))
    if l < 0 or t < 0 or l + sw >= w or t + sh >= h:
        pl, pt = max(-l, 0), max(-t, 0)
        pr, pb = max(sw - w + l, 0), max(sh - h + t, 0)
        if pl or pt or pr or pb:
            a = np.pad(np.asarray(img), ((pt, pb), (pl, pr), (0, 0)), mode=_NUMPY_PAD[pad_mode])
            img = Image.fromarray(a, "RGB")
    return img


def prepare(source: ImageSource, pre: Preprocess, *, max_pixels: int = DEFAULT_MAX_PIXELS,
            fast_decode: bool = True) -> np.ndarray:
    """Decode and fit one image: what the model's ``image`` input expects, minus the batch axis."""
    img = load_image(source, exif_transpose=pre.exif_transpose, background=pre.background,
                     max_pixels=max_pixels, draft_for=pre if fast_decode else None)
    return fit_to_size(img, pre)

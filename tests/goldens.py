"""Goldens for the runtime that need no torch: ``edge_infer.preprocess`` output and a tiny model.

fastai parity is checked only where torch is installed; these catch the other way pixels move
unnoticed: a Pillow or numpy upgrade (a new resampler, libjpeg's scaled IDCT, a colour
conversion). Each case is an image made here, deterministically (numpy arrays encoded by
Pillow, no download), prepared as a model's ``Preprocess`` says; the golden is the SHA-256 of
the uint8 pixels, and the probabilities of ``tiny_models.colour_graph`` for them.

Tolerance: pixels exact (Pillow's 8-bit resize and libjpeg-turbo's integer IDCT give the same
bytes on every x86 and ARM build); probabilities ``PROB_TOLERANCE`` absolute, since onnxruntime
may sum a channel in another order per kernel (AVX2, AVX-512). Each input's own SHA-256 is
stored too, so a failure says whether the encoder (the input) or the runtime (the output) moved.
The platform and library versions that made the file are in it (``made_on``).

Regenerated only on purpose: ``python -m tests.goldens --write`` (review the diff: every changed
hash is a change in what a deployed model sees); ``python -m tests.goldens`` checks, as
``tests/test_goldens.py`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import PIL
from PIL import Image

from edge_infer import Classifier, Preprocess
from edge_infer.preprocess import prepare
from tests import tiny_models

GOLDENS = Path(__file__).with_name("goldens.json")
PROB_TOLERANCE = 1e-5
SIZE = (32, 32)
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Case:
    image: str  # a name in inputs()
    pre: Preprocess
    fast_decode: bool = True


def _pre(**options: Any) -> Preprocess:
    return Preprocess(size=SIZE, **options)


CASES: dict[str, Case] = {
    "crop": Case("photo.png", _pre(resize="crop")),
    "squish": Case("photo.png", _pre(resize="squish")),
    "pad-zeros": Case("photo.png", _pre(resize="pad", pad_mode="zeros")),
    "pad-border": Case("photo.png", _pre(resize="pad", pad_mode="border")),
    "pad-reflection": Case("photo.png", _pre(resize="pad", pad_mode="reflection")),
    "exif-rotated": Case("exif-6.jpg", _pre(resize="squish")),
    "exif-ignored": Case("exif-6.jpg", _pre(resize="squish", exif_transpose=False)),
    "16-bit": Case("grey-16.png", _pre()),
    "cmyk": Case("cmyk.jpg", _pre()),
    "alpha-on-background": Case("rgba.png", _pre(background=(0, 128, 255))),
    "jpeg-reduced-scale": Case("large.jpg", _pre(), fast_decode=True),
    "jpeg-full-decode": Case("large.jpg", _pre(), fast_decode=False),
}


def gradient(w: int, h: int) -> np.ndarray:
    """uint8 [h, w, 3]: red rises left to right, green top to bottom, blue in diagonal bands,
    so a crop, a pad or a turn each changes the pixels in its own way."""
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + 2 * y) * 8 % 256], -1).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def inputs() -> dict[str, bytes]:
    """The encoded images the cases read, made from numpy arrays each time."""
    photo = Image.fromarray(gradient(64, 48))
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = 6  # stored on its side: shown turned 90 degrees clockwise
    deep = (gradient(60, 40)[..., 0].astype(np.uint16) * 257) ^ 0x5A5A  # uses all 16 bits
    rgba = np.dstack([gradient(48, 48), gradient(48, 48)[..., 1]])  # transparent at the top
    return {
        "photo.png": _encode(photo, "PNG"),
        "exif-6.jpg": _encode(photo, "JPEG", quality=90, exif=exif.tobytes()),
        "grey-16.png": _encode(Image.fromarray(deep), "PNG"),
        "cmyk.jpg": _encode(photo.convert("CMYK"), "JPEG", quality=90),
        "rgba.png": _encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "large.jpg": _encode(Image.fromarray(gradient(1024, 768)), "JPEG", quality=90),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def generate() -> dict[str, Any]:
    """The goldens as this machine computes them now."""
    data = inputs()
    pixels = {name: prepare(data[c.image], c.pre, fast_decode=c.fast_decode) for name, c in CASES.items()}
    with tempfile.TemporaryDirectory() as tmp:
        # gain 0.5: channel means a few levels apart give clearly different probabilities
        model = tiny_models.save(tiny_models.colour_graph(SIZE, gain=0.5), Path(tmp) / "colour.onnx",
                                 tiny_models.colour_info(SIZE))
        probs = Classifier.load(model, threads=1).probabilities(np.stack(list(pixels.values())))
    return {
        "about": "made by tests/goldens.py; regenerate only on purpose: python -m tests.goldens --write",
        "made_on": {"machine": platform.machine(), "system": platform.system(),
                    "python": platform.python_version(), "pillow": PIL.__version__,
                    "numpy": np.__version__, "onnxruntime": onnxruntime.__version__},
        "tolerance": {"pixels": "exact (SHA-256 of the uint8 array)", "probabilities": PROB_TOLERANCE},
        "inputs": {name: _sha256(raw) for name, raw in data.items()},
        "preprocess": {name: {"shape": list(p.shape), "sha256": _sha256(p.tobytes())}
                       for name, p in pixels.items()},
        "probabilities": {name: [round(float(v), 7) for v in row] for name, row in zip(pixels, probs, strict=True)},
    }


def differences(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """One line per golden that ``fresh`` does not reproduce; empty when all hold."""
    out = []
    for section in ("inputs", "preprocess"):
        for name in sorted(stored[section].keys() | fresh[section].keys()):
            want, got = stored[section].get(name), fresh[section].get(name)
            if want != got:
                out.append(f"{section} {name}: stored {want}, now {got}")
    for name in sorted(stored["probabilities"].keys() | fresh["probabilities"].keys()):
        want, got = stored["probabilities"].get(name), fresh["probabilities"].get(name)
        if want is None or got is None or len(want) != len(got) or \
                not np.allclose(want, got, rtol=0, atol=PROB_TOLERANCE):
            out.append(f"probabilities {name}: stored {want}, now {got} (tolerance {PROB_TOLERANCE:g})")
    return out


def _dumps(goldens: dict[str, Any]) -> str:
    """JSON with one golden a line, so a regenerated file's diff reads case by case."""
    def block(value: Any) -> str:
        if not isinstance(value, dict):
            return json.dumps(value)
        return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()) + "\n }"

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {block(v)}" for k, v in goldens.items()) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.goldens", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the goldens file (on purpose only)")
    parser.add_argument("--path", type=Path, default=GOLDENS)
    args = parser.parse_args(argv)
    fresh = generate()
    if args.write:
        args.path.write_text(_dumps(fresh))
        print(f"wrote {args.path}: {len(fresh['preprocess'])} preprocess cases; review the diff")
        return 0
    moved = differences(json.loads(args.path.read_text()), fresh)
    for line in moved:
        print(line, file=sys.stderr)
    print(f"{args.path}: {'all goldens hold' if not moved else f'{len(moved)} moved'}")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark's images: photo-like JPEGs at phone and camera sizes, made on the spot, offline.

Decode time depends on what is in a JPEG, so the images start from scikit-learn's two real sample
photos (``china.jpg``, ``flower.jpg``, 640x427), are cropped to the target aspect ratio, scaled
up (bicubic) and given a little sensor-like noise: an upscaled photo alone is smoother than a
real one and would compress (and decode) unrealistically well.

The one maker of JPEGs in benchmarks/ (the comparison, ``serve_load``, ``batch`` and ``train`` use
it); ``edge_infer.bench.synthetic_photo`` is the wheel's own, for ``edge-infer bench`` without
scikit-learn.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PHOTO_SIZES", "sample_photos", "real_photos", "fashion_mnist_test", "photo_jpeg", "write_photos",
           "write_crops", "write_copies"]

# name -> (width, height): a webcam frame, a 1080p video frame, a 12 MP phone photo.
PHOTO_SIZES: dict[str, tuple[int, int]] = {
    "640x480": (640, 480),
    "1920x1080": (1920, 1080),
    "4032x3024": (4032, 3024),
}
JPEG_QUALITY = 90
NOISE_SIGMA = 3.0  # grey levels; keeps the file size close to a real photo's


def sample_photos() -> dict[str, Image.Image]:
    """scikit-learn's sample photos as RGB images: {"china": ..., "flower": ...}."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise RuntimeError("the benchmark's photos come from scikit-learn's sample images: "
                           "pip install scikit-learn (it is in the dev group)") from None
    photos = load_sample_images()
    return {Path(name).stem: Image.fromarray(a) for name, a in zip(photos.filenames, photos.images, strict=True)}


def real_photos() -> list[Path]:
    """Every real photo the installed Python packages ship: scikit-learn's two, matplotlib's
    sample data, scikit-image's data folder (each only where installed). For backend agreement
    and decode checks on real content, offline."""
    import importlib.util

    found: list[Path] = []
    for package, sub, pattern in (("sklearn", "datasets/images", "*.jpg"),
                                  ("matplotlib", "mpl-data/sample_data", "*.[jp][pn]g"),
                                  ("skimage", "data", "*.[jp][pn]g")):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            found += sorted((Path(spec.origin).parent / sub).glob(pattern))
    return found


def fashion_mnist_test(n: int) -> list[np.ndarray]:
    """The first ``n`` Fashion-MNIST test images (28x28 grey arrays); [] without Debian's
    dataset-fashion-mnist package."""
    from train.datasets import FASHION_MNIST, fashion_mnist

    if not FASHION_MNIST.is_dir():
        return []
    pixels, _, _ = fashion_mnist("test")
    return list(pixels[:n])


def _fit(img: Image.Image, size: tuple[int, int], box: tuple[float, float, float] = (0.5, 0.5, 1.0)) -> Image.Image:
    """Crop ``img`` to the aspect of ``size`` (centre cx, cy, zoom) and resize to ``size``."""
    w, h = img.size
    tw, th = size
    cx, cy, zoom = box
    scale = min(w / tw, h / th) / zoom
    cw, ch = tw * scale, th * scale
    left = min(max(cx * w - cw / 2, 0), w - cw)
    top = min(max(cy * h - ch / 2, 0), h - ch)
    return img.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))


def _noisy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, dtype=np.float32)
    a = a + rng.normal(0.0, NOISE_SIGMA, a.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def photo_jpeg(size: tuple[int, int], *, photo: str = "china", seed: int = 0) -> bytes:
    """One photo-like JPEG of ``size`` (width, height) as bytes, from the sample photo ``photo``."""
    buf = io.BytesIO()
    _noisy(_fit(sample_photos()[photo], size), np.random.default_rng(seed)).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path, quality=JPEG_QUALITY)
    return path


def write_photos(folder: str | Path, sizes: dict[str, tuple[int, int]] | None = None, *,
                 photo: str = "china", seed: int = 0) -> dict[str, Path]:
    """One JPEG per size, ``folder/photo-<W>x<H>.jpg``; returns {size name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = sample_photos()[photo]
    rng = np.random.default_rng(seed)
    return {name: _save(_noisy(_fit(source, size), rng), folder / f"photo-{name}.jpg")
            for name, size in (sizes or PHOTO_SIZES).items()}


def write_crops(folder: str | Path, n_per_photo: int = 8, *, size: tuple[int, int] = (640, 480),
                seed: int = 0) -> dict[str, list[Path]]:
    """Varied crops of each sample photo, ``folder/<photo>/<i>.jpg``: {photo: [paths]}.

    Used as a two-class dataset (``china``/``flower``) for a random-weights learner and as the
    images on which the variants' top-1 answers are compared.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    for name, img in sample_photos().items():
        (Path(folder) / name).mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(n_per_photo):
            box = (rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(1.0, 3.0))
            crop = _fit(img, size, box)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out[name].append(_save(_noisy(crop, rng), Path(folder) / name / f"{i:03d}.jpg"))
    return out


def write_copies(source: str | Path, folder: str | Path, n: int) -> list[Path]:
    """``n`` byte-identical copies of ``source`` in ``folder`` (a folder to classify)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(source).read_bytes()
    paths = [folder / f"{i:04d}{Path(source).suffix}" for i in range(n)]
    for path in paths:
        path.write_bytes(data)
    return paths

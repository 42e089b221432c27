"""Training photos decoded and reduced once, so later epochs do not decode 12 MP JPEGs again.

A 4032x3024 phone JPEG costs 10-120 ms to decode; training at 224 px needs a small fraction of
those pixels, every epoch. ``prepare_training_sources`` decodes each *big* training image once
(``edge_infer.preprocess.load_image``: EXIF applied, one RGB rule, a reduced-scale JPEG decode
when that still leaves at least twice the model's size), reduces it to at least twice the
training size (aspect ratio kept, so fastai's crop, squish and pad still mean the same thing),
and stores it as a lossless PNG. Training then reads the small PNG instead of the photo.

* Only the training split uses the cache. Validation, ``test_dl`` (export's parity,
  ``interpret``) and everything else still open the original file, so they see exactly the
  pixels ``edge_infer`` produces: parity does not move.
* Small images (at most twice the training size both ways, e.g. 28x28 Fashion-MNIST at 64 px)
  are not touched: their training is exactly what it was without a cache.
* Entries are named by the SHA-256 of the file's bytes and the training size: a file that
  changes gets a new entry, a file that is moved or relabelled (``train clean``) keeps its own.
* The cache lives in ``$XDG_CACHE_HOME/edge-infer/train-images`` (``~/.cache/...``), outside
  the data folder, which stays the user's; deleting it at any time is safe.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from edge_infer.metadata import Preprocess
from edge_infer.preprocess import load_image

__all__ = ["default_cache_dir", "needs_reduction", "prepare_training_sources", "CacheReport"]

REDUCE_TO = 2  # cached images keep at least this many times the training size, both ways
VERSION = "v1"  # part of every entry's name: bump when the reduction changes


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-infer" / "train-images"


def _scale(width: int, height: int, size: tuple[int, int]) -> float:
    """How many times larger than ``REDUCE_TO`` x the training size (h, w) an image is (<= 1: small)."""
    h, w = size
    return min(width / (REDUCE_TO * w), height / (REDUCE_TO * h))


def needs_reduction(path: Path, size: tuple[int, int]) -> bool:
    """Whether ``path`` is big enough to cache, from its header alone (no pixels decoded).

    EXIF may still rotate it, so both orientations must be small for the image to pass through.
    Unreadable files are left to the normal loader, which names the problem.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return _scale(width, height, size) > 1 and _scale(height, width, size) > 1


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:  # hashlib.file_digest is 3.11+; the package supports 3.10
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry(root: Path, digest: str, size: tuple[int, int]) -> Path:
    return root / digest[:2] / f"{digest}-{size[0]}x{size[1]}-{VERSION}.png"


def _reduce(path: Path, entry: Path, size: tuple[int, int]) -> bool:
    """Decode ``path``, reduce it, write ``entry`` atomically; True when a new entry was written."""
    if entry.is_file():
        return False
    img = load_image(path, draft_for=Preprocess(size=size))
    scale = _scale(img.width, img.height, size)
    if scale > 1:
        # Lanczos keeps the detail that fastai's own bilinear Resize then averages down.
        img = img.resize((round(img.width / scale), round(img.height / scale)), Image.Resampling.LANCZOS)
    entry.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name in the same folder, then os.replace: two ranks or two runs filling the
    # cache at once never see half a file.
    fd, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=entry.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG", compress_level=1)  # fast to write and to read back
        os.replace(tmp, entry)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def _cache_one(job: tuple[str, str, tuple[int, int]]) -> tuple[str, bool]:
    path, root, size = Path(job[0]), Path(job[1]), job[2]
    entry = _entry(root, _digest(path), size)
    return str(entry), _reduce(path, entry, size)


@dataclass(frozen=True)
class CacheReport:
    big: int        # training images larger than twice the training size
    written: int    # of those, decoded and reduced now (the rest were cached already)
    seconds: float
    root: Path


def prepare_training_sources(paths: list[Path], size: tuple[int, int], *, root: Path | None = None,
                             workers: int = 0) -> tuple[list[str], CacheReport]:
    """The file each training image is read from: its cache entry when big, itself otherwise.

    Decodes every big image that has no entry yet, in ``workers`` processes (0: this one).
    """
    start = time.perf_counter()
    root = Path(root) if root is not None else default_cache_dir()
    sources = [str(p) for p in paths]
    big = [i for i, p in enumerate(paths) if needs_reduction(p, size)]
    jobs = [(str(paths[i]), str(root), (size[0], size[1])) for i in big]
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(_cache_one, jobs, chunksize=8))
    else:
        done = [_cache_one(job) for job in jobs]
    for i, (entry, _) in zip(big, done):
        sources[i] = entry
    report = CacheReport(len(big), sum(new for _, new in done), time.perf_counter() - start, root)
    return sources, report

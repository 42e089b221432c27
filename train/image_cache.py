"""Training photos decoded and reduced once, so later epochs do not decode 12 MP JPEGs again.

A 4032x3024 phone JPEG costs 10-120 ms to decode; training at 224 px needs a small fraction of
those pixels, every epoch. ``prepare_training_sources`` decodes each *big* training image once
(``edge_infer.preprocess.load_image``: EXIF applied, one RGB rule, a reduced-scale JPEG decode
when that still leaves at least twice the model's size), reduces it to at least twice the
training size (aspect ratio kept, so fastai's crop, squish and pad still mean the same thing),
and stores it uncompressed (PPM: lossless, and read in 0.5 ms where a PNG of the same 597x448
image took 10.7 ms, which left an H200 waiting on its workers). Training then reads the small
copy instead of the photo.

* Validation has no randomness, so its big images are cached one step further
  (``prepare_validation_sources``): the validation item itself, made by the runtime's own
  ``edge_infer.preprocess.fit_to_size`` from the original file at exactly the training size and
  stored lossless. fastai's ``Resize`` leaves an image already at its size untouched, so the
  validation batches are bit for bit what the original files give (tests/test_train_cache.py
  checks crop, squish and pad), and a 12 MP photo is decoded once, not every epoch: on an H200
  validating 400 original photos took most of each epoch (issue 12).
* ``test_dl`` (export's parity, ``interpret``) and everything else still open the original file,
  so parity does not move.
* Small images (at most twice the training size both ways, e.g. 28x28 Fashion-MNIST at 64 px)
  are not touched: their training is exactly what it was without a cache.
* Entries are named by the SHA-256 of the file's bytes and the training size (validation items
  also by the resize method and pad mode): a file that changes gets a new entry, a file that is
  moved or relabelled (``train clean``) keeps its own.
* The cache lives in ``$XDG_CACHE_HOME/edge-infer/train-images`` (``~/.cache/...``), outside
  the data folder, which stays the user's; deleting it at any time is safe.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from edge_infer.metadata import Preprocess
from edge_infer.preprocess import fit_to_size, load_image

__all__ = ["default_cache_dir", "needs_reduction", "prepare_training_sources", "prepare_validation_sources",
           "CacheReport"]

REDUCE_TO = 2  # cached images keep at least this many times the training size, both ways
VERSION = "v2"  # part of every entry's name: bump when the reduction or the format changes (v1: PNG)


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
    return root / digest[:2] / f"{digest}-{size[0]}x{size[1]}-{VERSION}.ppm"


def _valid_entry(root: Path, digest: str, pre: Preprocess) -> Path:
    h, w = pre.size
    return root / digest[:2] / f"{digest}-{h}x{w}-{pre.resize}-{pre.pad_mode}-valid-{VERSION}.ppm"


def _reduce(path: Path, entry: Path, size: tuple[int, int]) -> bool:
    """Decode ``path``, reduce it, write ``entry`` atomically; True when a new entry was written."""
    if entry.is_file():
        return False
    img = load_image(path, draft_for=Preprocess(size=size))
    scale = _scale(img.width, img.height, size)
    if scale > 1:
        # Lanczos keeps the detail that fastai's own bilinear Resize then averages down.
        img = img.resize((round(img.width / scale), round(img.height / scale)), Image.Resampling.LANCZOS)
    _write(img, entry)
    return True


def _fit(path: Path, entry: Path, pre: Preprocess) -> bool:
    """The validation item of ``path`` (full decode, the runtime's resize) into ``entry``."""
    if entry.is_file():
        return False
    _write(Image.fromarray(fit_to_size(load_image(path), pre)), entry)
    return True


def _write(img: Image.Image, entry: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name in the same folder, then os.replace: two ranks or two runs filling the
    # cache at once never see half a file.
    fd, tmp = tempfile.mkstemp(suffix=".ppm.tmp", dir=entry.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PPM")  # raw RGB bytes: nothing to inflate on every read
        os.replace(tmp, entry)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cache_one(job: tuple[str, str, tuple[int, int]]) -> tuple[str, bool]:
    path, root, size = Path(job[0]), Path(job[1]), job[2]
    entry = _entry(root, _digest(path), size)
    return str(entry), _reduce(path, entry, size)


def _cache_valid_one(job: tuple[str, str, Preprocess]) -> tuple[str, bool]:
    path, root, pre = Path(job[0]), Path(job[1]), job[2]
    entry = _valid_entry(root, _digest(path), pre)
    return str(entry), _fit(path, entry, pre)


@dataclass(frozen=True)
class CacheReport:
    big: int        # images larger than twice the training size
    written: int    # of those, decoded and reduced now (the rest were cached already)
    seconds: float
    root: Path


def prepare_training_sources(paths: list[Path], size: tuple[int, int], *, root: Path | None = None,
                             workers: int = 0) -> tuple[list[str], CacheReport]:
    """The file each training image is read from: its cache entry when big, itself otherwise.

    Decodes every big image that has no entry yet, in ``workers`` processes (0: this one).
    """
    return _prepare(paths, size, root, workers, _cache_one, (size[0], size[1]))


def prepare_validation_sources(paths: list[Path], pre: Preprocess, *, root: Path | None = None,
                               workers: int = 0) -> tuple[list[str], CacheReport]:
    """The file each validation image is read from: its finished validation item when big, itself otherwise.

    Big means what it means for training (``needs_reduction``); small images are read as they
    are, so a Fashion-MNIST run is unchanged.
    """
    return _prepare(paths, pre.size, root, workers, _cache_valid_one, pre)


def _prepare(paths: list[Path], size: tuple[int, int], root: Path | None, workers: int,
             cache_one: Callable[[Any], tuple[str, bool]], arg: object) -> tuple[list[str], CacheReport]:
    """Runs ``cache_one((path, root, arg))`` on every big image, in ``workers`` processes (0: here)."""
    start = time.perf_counter()
    root = Path(root) if root is not None else default_cache_dir()
    sources = [str(p) for p in paths]
    big = [i for i, p in enumerate(paths) if needs_reduction(p, size)]
    jobs = [(str(paths[i]), str(root), arg) for i in big]
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(cache_one, jobs, chunksize=8))
    else:
        done = [cache_one(job) for job in jobs]
    for i, (entry, _) in zip(big, done):
        sources[i] = entry
    report = CacheReport(len(big), sum(new for _, new in done), time.perf_counter() - start, root)
    return sources, report

"""Exact and near-duplicate images among the data folder's images.

* Exact: the SHA-256 of the file's bytes.
* Near: a 64-bit difference hash (dHash, after N. Krawetz, "Kind of like that", 2013). The image
  is decoded as the model sees it (``load_image``: EXIF applied, RGB), shrunk to 9x8 pixels with
  Lanczos, made grayscale, and each of the 64 bits says whether a pixel is brighter than its
  right-hand neighbour. Re-encoding, resizing and small colour changes flip a few bits; a
  different picture flips about half of them (32). Two images are near duplicates when their
  hashes differ in at most ``NEAR_BITS`` bits *and* their mean colours differ by at most
  ``COLOUR_TOLERANCE`` (0..255) on every channel: dHash sees only grayscale structure, so
  without the colour check a flat red square and a flat blue one (both hash 0) would match.

Groups are the connected components of "same bytes, or near": a group whose files are all
byte-identical is ``exact``, any other ``near``. Files that cannot be decoded are listed apart
(``unreadable``): they are worth a look in a cleaning session too. All pairs are compared with
numpy, one row of XORs and popcounts per image: about a second for 20,000 images.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from edge_infer.errors import ImageError
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import load_image

__all__ = ["NEAR_BITS", "COLOUR_TOLERANCE", "Fingerprint", "dhash", "fingerprint", "scan", "groups",
           "unreadable"]

NEAR_BITS = 6
COLOUR_TOLERANCE = 24.0
# Lets libjpeg decode big photos at 1/8 scale: the hash only needs 9x8 pixels.
_DRAFT = Preprocess(size=(32, 32), resize="squish")


@dataclass(frozen=True)
class Fingerprint:
    path: str  # relative to the data folder
    sha256: str
    bytes: int
    dhash: int | None = None  # None when the image cannot be decoded
    mean: tuple[float, float, float] | None = None
    width: int = 0
    height: int = 0
    error: str | None = None


def dhash(img: Image.Image) -> tuple[int, tuple[float, float, float]]:
    """The 64-bit difference hash of an RGB image, and its mean colour."""
    small = img.resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=3.0)
    mean = tuple(float(c) for c in np.asarray(small, dtype=np.float64).mean(axis=(0, 1)))
    g = np.asarray(small.convert("L"), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0]), mean  # type: ignore[return-value]


def fingerprint(data: Path, rel: str) -> Fingerprint:
    path = Path(data) / rel
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        img = load_image(raw, draft_for=_DRAFT)
        with Image.open(io.BytesIO(raw)) as stored:
            w, h = stored.size  # the stored size, not the draft's
    except (ImageError, OSError) as e:
        return Fingerprint(rel, digest, len(raw), error=str(e).replace("<bytes>", rel))
    bits, mean = dhash(img)
    return Fingerprint(rel, digest, len(raw), bits, mean, w, h)


def scan(data: Path, paths: Iterable[str], *, cache: dict | None = None,
         progress: Callable[[int], None] | None = None) -> list[Fingerprint]:
    """Fingerprints of ``paths``; ``cache`` (kept by the caller) skips files seen before.

    The cache key is (device, inode, size, mtime): a file moved by `clean` keeps its inode, so
    a rescan after applying decisions hashes nothing again.
    """
    cache = {} if cache is None else cache
    out = []
    for n, rel in enumerate(paths, 1):
        st = os.stat(Path(data) / rel)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in cache:
            cache[key] = fingerprint(data, rel)
        fp = cache[key]
        out.append(fp if fp.path == rel else replace(fp, path=rel))
        if progress:
            progress(n)
    return out


def groups(prints: list[Fingerprint]) -> list[dict]:
    """Groups of two or more duplicates, exact groups first; see the module docstring."""
    parent = list(range(len(prints)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    first_of: dict[str, int] = {}
    for i, fp in enumerate(prints):
        union(i, first_of.setdefault(fp.sha256, i))
    for i, j in _near_pairs(prints):
        union(i, j)
    members: dict[int, list[int]] = {}
    for i in range(len(prints)):
        members.setdefault(find(i), []).append(i)
    out = [_group([prints[i] for i in idx]) for idx in members.values() if len(idx) > 1]
    return sorted(out, key=lambda g: (g["kind"] != "exact", g["items"][0]["path"]))


def _near_pairs(prints: list[Fingerprint]) -> list[tuple[int, int]]:
    idx = [i for i, fp in enumerate(prints) if fp.dhash is not None]
    if len(idx) < 2:
        return []
    hashes = np.array([prints[i].dhash for i in idx], dtype=np.uint64)
    means = np.array([prints[i].mean for i in idx], dtype=np.float64)
    pairs = []
    for a in range(len(idx) - 1):
        dist = _popcount(hashes[a + 1:] ^ hashes[a])
        close = np.abs(means[a + 1:] - means[a]).max(axis=1) <= COLOUR_TOLERANCE
        pairs += [(idx[a], idx[a + 1 + b]) for b in np.flatnonzero((dist <= NEAR_BITS) & close)]
    return pairs


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def _group(fps: list[Fingerprint]) -> dict:
    fps = sorted(fps, key=lambda f: (-(f.width * f.height), -f.bytes, f.path))  # biggest first
    ref = fps[0]
    shas = [f.sha256 for f in fps]
    items = [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes, "width": f.width,
              "height": f.height, "identical": shas.count(f.sha256) > 1,
              "distance": (int(_popcount(np.array([f.dhash ^ ref.dhash], dtype=np.uint64))[0])
                           if f.dhash is not None and ref.dhash is not None else None)}
             for f in fps]
    return {"kind": "exact" if len(set(shas)) == 1 else "near", "items": items}


def unreadable(prints: list[Fingerprint]) -> list[dict]:
    return [{"path": f.path, "error": f.error} for f in prints if f.error]

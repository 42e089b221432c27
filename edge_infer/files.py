"""Which files are images: THE suffix list of the project, and ``find_images`` to list a folder.

Training (``train.data``, ``train.verify``, ``train.clean``), the CLI and the Ray path all list
folders through this module, so a file that training sees is a file that ``edge-infer predict``
and ``edge-infer eval`` see. Hidden files and folders (``.quarantine``, ``.cache``, ``.git``)
are skipped: that is where ``python -m train verify`` and ``clean`` move what they set aside.
``sha256_file`` is the one file digest (the web manifest, the quarantine journal, the store).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "find_images", "is_image_name", "sha256_file"]

# Every format Pillow decodes by itself (Pillow 13: its registered extensions with a decoder),
# plus HEIC/HEIF through the `heif` extra (pillow-heif): a folder walk picks these up. Left out on
# purpose: the stubs that need a handler of the caller's (BUFR, GRIB, HDF5, WMF/EMF), EPS/PS
# (Ghostscript), MPEG (identified, not decoded), PDF and Palm (Pillow writes them only) and IPTC
# (.iim, metadata records). A file named explicitly (on the command line, in labels.csv) is always
# tried, whatever its name; this list only decides what a folder walk picks up. A suffix whose
# reader is missing (HEIC without the extra, AVIF on a Pillow without libavif) is still listed, so
# the walk reports that file with the fix instead of skipping it silently.
IMAGE_SUFFIXES = frozenset({
    # photos and the web
    ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".apng", ".gif", ".webp", ".avif", ".avifs",
    ".heic", ".heif", ".hif", ".tif", ".tiff", ".bmp", ".dib",
    # everything else Pillow reads
    ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".icb", ".vda", ".vst", ".ico", ".cur", ".icns",
    ".qoi", ".pcx", ".dcx", ".sgi", ".rgb", ".rgba", ".bw", ".jp2", ".j2k", ".j2c", ".jpc", ".jpf",
    ".jpx", ".dds", ".blp", ".psd", ".im", ".msp", ".xbm", ".xpm", ".ras", ".pcd", ".pxr", ".fli",
    ".flc", ".ftc", ".ftu", ".gbr", ".fit", ".fits",
})


def find_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (by suffix), sorted; hidden files and folders are skipped.

    >>> clf.classify_files(find_images("holiday", recursive=True))

    Raises ``NotADirectoryError``/``FileNotFoundError`` (``OSError``) when ``folder`` cannot be
    listed.
    """
    folder = Path(folder)
    if not recursive:
        return sorted(p for p in folder.iterdir() if is_image_name(p.name) and p.is_file())
    if not folder.is_dir():
        os.scandir(folder).close()  # raises the OSError that names the problem; os.walk is silent
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, n) for n in names if is_image_name(n)]
    return sorted(found)


def is_image_name(name: str) -> bool:
    """True for a visible file name with an image suffix (case-insensitive)."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks (``hashlib.file_digest`` is 3.11+)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

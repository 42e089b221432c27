"""``python -m train download URLS_FILE --dest DATA/CLASS``: fetch image URLs into a class folder.

One URL per line (blank lines and ``#`` comments ignored). Each URL is fetched once (duplicate
URLs are skipped), with a timeout and a size cap; a file whose bytes are already in the folder is
skipped (duplicate content: the name is the SHA-256 of the bytes, and the folder's existing
images are hashed first). Every saved file is then decoded by ``train.verify``: one that fails
(an HTML error page, a truncated download) is quarantined as ``verify`` does (``why``
``download``, one batch per run) and does not count towards ``--max``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from edge_infer.files import IMAGE_SUFFIXES, sha256_file

from .errors import TrainError
from .quarantine import new_batch
from .verify import Quarantined, check_files

__all__ = ["DownloadReport", "download", "read_urls"]

MAX_BYTES = 30_000_000
USER_AGENT = "edge-infer-train/1 (+python urllib)"
# Pillow's format name -> the extension the file is saved with.
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
              "TIFF": ".tif", "MPO": ".jpg"}


@dataclass
class DownloadReport:
    saved: list[Path] = field(default_factory=list)
    duplicate_urls: int = 0
    duplicate_content: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (url, reason)
    quarantined: list[Quarantined] = field(default_factory=list)


def read_urls(path: str | Path) -> list[str]:
    """The URLs in ``path``, in order, duplicates included (``download`` counts them)."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TrainError(f"{path}: not a UTF-8 text file of URLs") from None
    urls = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not urls:
        raise TrainError(f"{path}: no URLs (one per line; '#' starts a comment)")
    return urls


def download(urls_file: str | Path, dest: str | Path, *, max_images: int | None = None,
             timeout: float = 10.0, progress: bool = True) -> DownloadReport:
    """Fetch the URLs in ``urls_file`` into ``dest`` (created); see the module docstring."""
    urls, dest = read_urls(urls_file), Path(dest)
    if dest.exists() and not dest.is_dir():
        raise TrainError(f"--dest {dest} is a file, not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    known = {sha256_file(p) for p in dest.iterdir() if p.is_file()}
    seen: set[str] = set()
    report, batch = DownloadReport(), new_batch()
    bar = tqdm(urls, desc=f"download -> {dest}", unit="url", disable=not progress)
    for url in bar:
        if max_images is not None and len(report.saved) >= max_images:
            break
        if url in seen:
            report.duplicate_urls += 1
            continue
        seen.add(url)
        try:
            body = _fetch(url, timeout)
        except (TrainError, OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts: OSError
            report.failed.append((url, _why(e)))
            print(f"{url}: {_why(e)}", file=sys.stderr)
            continue
        digest = hashlib.sha256(body).hexdigest()
        if digest in known:
            report.duplicate_content += 1
            continue
        known.add(digest)
        path = dest / f"{digest[:16]}{_extension(body, url)}"
        path.write_bytes(body)
        bad = check_files([path], dest.parent, why="download", batch=batch)
        report.quarantined += bad
        if not bad:
            report.saved.append(path)
    return report


def _fetch(url: str, timeout: float) -> bytes:
    if urlsplit(url).scheme not in ("http", "https"):
        raise TrainError("not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise TrainError(f"larger than {MAX_BYTES // 1_000_000} MB")
    if not body:
        raise TrainError("empty response")
    return body


def _why(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    if isinstance(error, TimeoutError):
        return "timed out"
    return " ".join(str(error).split()) or type(error).__name__


def _extension(body: bytes, url: str) -> str:
    """From the bytes when Pillow knows them, else from the URL; broken files are caught later."""
    with contextlib.suppress(UnidentifiedImageError, OSError, ValueError, SyntaxError):
        with Image.open(io.BytesIO(body)) as img:
            if img.format in EXTENSIONS:
                return EXTENSIONS[img.format]
    suffix = Path(urlsplit(url).path).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".jpg"

"""Every training and validation image decoded once, into one uint8 file the batch loader indexes.

fastai makes each item in Python (open, decode, resize, to tensor: about 2 ms an item), which
caps a 16-core box near 1,900 images/s whatever the GPU (issue 24). Here each image is decoded
once, by the runtime's own ``edge_infer.preprocess.load_image`` (EXIF applied, one RGB rule),
into a fixed-shape row of ``images.u8``, a raw ``[N, H, W, 3]`` uint8 array that is memory-mapped
back; a batch is then one gather of rows (``train.loader``).

What a row holds, per split and preprocessing (``Layout``):

* validation: the finished validation item, ``fit_to_size(load_image(path), pre)`` from the
  full decode: byte for byte what fastai's validation ``Resize`` and ``edge_infer`` give.
* training, ``finished``: when fastai's training ``Resize`` has no randomness for any training
  image (``squish``; or crop/pad where every image already has the target's aspect, so the crop
  box is the whole image, e.g. Fashion-MNIST 28 px at 32 px), the row is the training item
  itself, byte-equal to what fastai's item pipeline made: the same batches, the same model.
* training, ``canvas``: otherwise each image is reduced once (Lanczos, as the old cache did) and
  squished into one canvas shape for the data set, large enough that the crop box of its
  widest-aspect image still holds ``NEED`` x the training size (``aug_transforms``' zoom of up to
  1.1 then samples no finer than the stored pixels). The image's own width and height are kept
  beside it, so the random crop or pad box is computed in its own pixels, exactly as fastai's
  ``Resize`` computes it, and the loader resamples it on the device for the whole batch.

A store is a folder under ``$XDG_CACHE_HOME/edge-infer/train-store`` named by the data folder,
split and preprocessing, outside the data folder and safe to delete at any time. Its
``manifest.json`` keys rows by path with each file's size and mtime: a warm start stats the files
and decodes nothing; the content is hashed (SHA-256) only when size or mtime changed, and a
file whose content is new is decoded again (into a new row). Filling runs on every core
(processes) with a progress bar; a lock file keeps two ranks of one ``torchrun`` from filling at
once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from edge_infer.files import sha256_file
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import fit_to_size, load_image

__all__ = ["NEED", "Layout", "Store", "default_store_dir", "open_store", "plan_layout", "resize_box"]

VERSION = 1  # in every store's key: bump when a row's meaning or the file format changes
NEED = 1.1   # stored resolution over the training size: aug_transforms' max_zoom
MAX_STRETCH = 2.0  # a canvas grows for elongated images up to this factor, no further
Kind = Literal["valid", "finished", "canvas"]


def default_store_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-infer" / "train-store"


@dataclass(frozen=True)
class Layout:
    """What every row of one store is: its kind and its (height, width)."""

    kind: Kind
    shape: tuple[int, int]


def resize_box(w: np.ndarray, h: np.ndarray, pre: Preprocess,
               pcts: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """fastai's ``Resize.encodes`` box, vectorised: (left, top, box width, box height) per image.

    ``pcts`` [N, 2] are the random positions fastai draws per item in training (``None``: the
    centre, as in validation). Float64 and ``trunc`` like fastai's Python ``int()``.
    """
    th, tw = pre.size
    w, h = np.asarray(w, dtype=np.float64), np.asarray(h, dtype=np.float64)
    if pre.resize == "squish":
        return np.zeros_like(w), np.zeros_like(h), w, h
    first = w / tw < h / th if pre.resize == "crop" else w / tw > h / th
    m = np.where(first, w / tw, h / th)
    cw, ch = np.trunc(m * tw), np.trunc(m * th)
    px, py = (np.full_like(w, 0.5), np.full_like(h, 0.5)) if pcts is None else (pcts[:, 0], pcts[:, 1])
    return np.trunc(px * (w - cw)), np.trunc(py * (h - ch)), cw, ch


def plan_layout(sizes: np.ndarray, pre: Preprocess, split: Literal["train", "valid"]) -> Layout:
    """The rows' kind and shape for images of ``sizes`` [N, 2] (width, height as shown)."""
    th, tw = pre.size
    if split == "valid":
        return Layout("valid", (th, tw))
    w, h = sizes[:, 0], sizes[:, 1]
    _, _, cw, ch = resize_box(w, h, pre)
    # int(pct * d) is 0 for every pct in [0, 1) when |d| <= 1: the box cannot move
    fixed = pre.resize == "squish" or bool(np.all((np.abs(w - cw) <= 1) & (np.abs(h - ch) <= 1)))
    if fixed:
        return Layout("finished", (th, tw))
    # the canvas row holds image/box x NEED x target pixels across, at most the image itself
    need_h = np.minimum(h, NEED * th * np.minimum(h / ch, MAX_STRETCH))
    need_w = np.minimum(w, NEED * tw * np.minimum(w / cw, MAX_STRETCH))
    return Layout("canvas", (max(th, math.ceil(need_h.max())), max(tw, math.ceil(need_w.max()))))


def shown_size(path: Path) -> tuple[int, int]:
    """(width, height) of ``path`` as shown, EXIF rotation applied, from its header alone."""
    with Image.open(path) as img:
        w, h = img.size
        turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (h, w) if turned else (w, h)


def make_row(path: Path, layout: Layout, pre: Preprocess) -> np.ndarray:
    """One row of a store: the image decoded once and made into what ``layout`` says."""
    if layout.kind in ("valid", "finished"):
        return fit_to_size(load_image(path), pre)  # full decode: what fastai's pipeline reads
    h, w = layout.shape
    img = load_image(path, draft_for=Preprocess(size=(h, w), resize="squish"))
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _job(args: tuple[str, Layout, Preprocess]) -> tuple[str, bytes]:
    path = Path(args[0])
    return sha256_file(path), make_row(path, args[1], args[2]).tobytes()


class Store:
    """An opened store: ``images`` [rows, H, W, 3] uint8 (memory-mapped), and per requested
    item its ``rows`` index and shown ``sizes`` (width, height)."""

    def __init__(self, folder: Path, layout: Layout, rows: np.ndarray, sizes: np.ndarray,
                 decoded: int, seconds: float) -> None:
        self.folder, self.layout, self.rows, self.sizes = folder, layout, rows, sizes
        self.decoded, self.seconds = decoded, seconds
        n = int(rows.max()) + 1 if len(rows) else 0
        h, w = layout.shape
        self.images = (np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(n, h, w, 3))
                       if n else np.zeros((0, h, w, 3), np.uint8))

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, i: int) -> np.ndarray:
        return np.asarray(self.images[self.rows[i]])


def store_key(data: Path, pre: Preprocess, split: str) -> str:
    spec = json.dumps({"data": str(data), "split": split, "pre": asdict(pre), "version": VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def open_store(data: Path, paths: Sequence[str], pre: Preprocess, split: Literal["train", "valid"], *,
               root: Path | None = None, workers: int | None = None) -> Store:
    """The store of ``paths`` (relative to ``data``), filled where rows are missing or stale."""
    start = time.perf_counter()
    data = Path(data).resolve()
    folder = (Path(root) if root is not None else default_store_dir()) / f"{split}-{store_key(data, pre, split)}"
    folder.mkdir(parents=True, exist_ok=True)
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    with _locked(folder / "lock"):
        manifest = _read_manifest(folder)
        stats = [os.stat(data / p) for p in paths]
        entries: dict = manifest.get("entries", {})
        fresh = [i for i, (p, st) in enumerate(zip(paths, stats, strict=True)) if not _same_file(entries.get(p), st)]
        sizes = _sizes(data, paths, entries, fresh, workers)
        layout = plan_layout(sizes, pre, split)
        if manifest.get("layout") != [layout.kind, list(layout.shape)]:  # a new shape: a new file
            entries, manifest = {}, {"layout": [layout.kind, list(layout.shape)], "rows": 0}
            (folder / "images.u8").unlink(missing_ok=True)
            fresh = list(range(len(paths)))
        decoded = _fill(data, folder, paths, stats, sizes, fresh, entries, manifest, layout, pre, workers)
        rows = np.array([entries[p]["row"] for p in paths], dtype=np.int64)
    return Store(folder, layout, rows, sizes, decoded, time.perf_counter() - start)


def _same_file(entry: dict | None, st: os.stat_result) -> bool:
    return entry is not None and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns


def _sizes(data: Path, paths: Sequence[str], entries: dict, fresh: list[int], workers: int) -> np.ndarray:
    """Shown (width, height) of every item: the manifest's, or the header's for new or changed files."""
    sizes = np.array([entries[p]["wh"] if p in entries else (0, 0) for p in paths], dtype=np.int64).reshape(-1, 2)
    for i, w, h in _parallel(shown_size, [data / paths[i] for i in fresh], workers):
        sizes[fresh[i]] = (w, h)
    return sizes


def _fill(data: Path, folder: Path, paths: Sequence[str], stats: list[os.stat_result], sizes: np.ndarray,
          fresh: list[int], entries: dict, manifest: dict, layout: Layout, pre: Preprocess,
          workers: int) -> int:
    """Decode the ``fresh`` items (new, or changed on disk) into new rows; returns how many."""
    by_digest = {e["sha256"]: e["row"] for e in entries.values()}
    todo = []
    for i in fresh:
        old = entries.get(paths[i])
        if old is not None and sha256_file(data / paths[i]) == old["sha256"]:  # touched, same bytes
            old.update(size=stats[i].st_size, mtime_ns=stats[i].st_mtime_ns)
        else:
            todo.append(i)
    if todo:
        from .progress import work_bar

        jobs = [(str(data / paths[i]), layout, pre) for i in todo]
        with open(folder / "images.u8", "r+b" if (folder / "images.u8").exists() else "wb") as f:
            results = _parallel(_job, jobs, workers)
            for k, digest, row in work_bar(results, len(jobs), f"decoding {len(jobs)} {layout.kind} images"):
                i = todo[k]
                if digest not in by_digest:  # the same bytes elsewhere (a moved file) share a row
                    by_digest[digest] = manifest["rows"]
                    f.seek(manifest["rows"] * len(row))
                    f.write(row)
                    manifest["rows"] += 1
                entries[paths[i]] = {"size": stats[i].st_size, "mtime_ns": stats[i].st_mtime_ns,
                                     "sha256": digest, "row": by_digest[digest], "wh": [int(v) for v in sizes[i]]}
    if fresh:
        manifest["entries"] = entries
        tmp = folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, folder / "manifest.json")  # never half a manifest
    return len(todo)


def _parallel(fn, jobs: list, workers: int) -> Iterator[tuple]:
    """``(index, *fn(job))`` for every job, in order, in ``workers`` processes (<= 1: here)."""
    if workers <= 1 or len(jobs) < 4:
        for k, job in enumerate(jobs):
            yield (k, *fn(job))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for k, out in enumerate(pool.map(fn, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers))))):
            yield (k, *out)


def _read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    rows_on_disk = (folder / "images.u8").stat().st_size if (folder / "images.u8").exists() else 0
    h, w = manifest.get("layout", [None, [0, 0]])[1]
    if manifest.get("rows", 0) * h * w * 3 > rows_on_disk:  # a fill cut short: start again
        return {}
    return manifest


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


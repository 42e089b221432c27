"""Real data, offline: write Fashion-MNIST or scikit-learn's digits as ``DEST/<label>/<i>.png``.

For tests and the demo (``python -m train make-data fashion-mnist|digits|shapes DEST``); no
network.

* ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (``apt-get install
  dataset-fashion-mnist``): the IDX files under ``/usr/share/datasets/fashion-mnist``, gzipped
  or not. ``split="train"`` reads the 60,000-image training file, ``"test"`` the 10,000-image
  test file, so a held-out set never overlaps the training images. 28x28 grayscale PNGs.
* ``digits``: ``sklearn.datasets.load_digits`` (1,797 8x8 images that ship with scikit-learn),
  scaled from 0..16 to 0..255 and upscaled to 32x32 (bilinear). It has no official split: the
  first 80% of each class (in file order) is ``train``, the rest ``test``.
* ``shapes``: not real data: a red, green or blue disc at a random place on a random dark
  ground (40x40 RGB), for the fastest tests; ``split`` picks a different random seed.

``i`` is the image's index in its source, so every PNG can be traced back; the first
``per_class`` images of each class (in source order) are written.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .errors import TrainError

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

__all__ = ["FASHION_MNIST", "FASHION_LABELS", "DATASETS", "read_idx", "fashion_mnist", "digits",
           "shapes", "write_pngs", "make_data"]

DATASETS = ("fashion-mnist", "digits", "shapes")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# The official class names, spelt as folder names.
FASHION_LABELS = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle_boot")
IDX_TYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
DIGITS_SIZE = 32
DIGITS_TRAIN_FRACTION = 0.8


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: magic, dims, big-endian data), gzipped or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise TrainError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise TrainError(f"{path}: truncated IDX file ({data.size} values for shape {dims})")
    return data.reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise TrainError(f"{root / stem}[.gz]: no such file; install it with "
                     "apt-get install dataset-fashion-mnist")


Dataset = tuple[np.ndarray, np.ndarray, tuple[str, ...]]  # images, label indices, label names


def fashion_mnist(split: str = "train", root: Path = FASHION_MNIST) -> Dataset:
    """(images uint8 [N, 28, 28], labels int [N], label names)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise TrainError(f"{root}: {len(images)} images but {len(labels)} labels in the {split} files")
    return images, labels.astype(np.int64), FASHION_LABELS


def digits(split: str = "train") -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray]:
    """(images uint8 [N, 32, 32], labels int [N], label names "0".."9", index in load_digits)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.zeros(len(d.target), dtype=bool)
    for label in range(10):
        idx = np.flatnonzero(d.target == label)
        cut = int(round(len(idx) * DIGITS_TRAIN_FRACTION))
        keep[idx[:cut] if split == "train" else idx[cut:]] = True
    small = np.rint(d.images * (255 / 16)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(a).resize((DIGITS_SIZE, DIGITS_SIZE), Image.Resampling.BILINEAR))
                    for a in small])
    index = np.flatnonzero(keep)
    return big[index], d.target[index].astype(np.int64), tuple(str(i) for i in range(10)), index


SHAPE_COLOURS = {"blue": (30, 30, 220), "green": (30, 200, 30), "red": (220, 30, 30)}


def shapes(split: str = "train", per_class: int = 12, size: int = 40) -> Dataset:
    """(images uint8 [N, size, size, 3], labels int [N], colour names): discs on dark grounds."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    names = tuple(SHAPE_COLOURS)
    images, labels = [], []
    for i in range(per_class * len(names)):
        img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 80, 3)))
        x, y = (int(v) for v in rng.integers(2, size - 26, 2))
        ImageDraw.Draw(img).ellipse([x, y, x + 24, y + 24], fill=SHAPE_COLOURS[names[i % len(names)]])
        images.append(np.asarray(img))
        labels.append(i % len(names))
    return np.stack(images), np.array(labels), names


def write_pngs(dest: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
               per_class: int | None, index: np.ndarray | None = None) -> dict[str, int]:
    """The first ``per_class`` images of each class as ``dest/<name>/<i>.png``; counts per class."""
    index = np.arange(len(images)) if index is None else index
    chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(names))])
    chosen.sort()
    for j in tqdm(chosen, desc=f"write {dest}", unit="image", disable=None):  # None: quiet in logs
        folder = dest / names[labels[j]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[j]).save(folder / f"{index[j]}.png")
    return {names[c]: int((labels[chosen] == c).sum()) for c in range(len(names))}


def make_data(name: str, dest: str | Path, *, per_class: int | None = None, split: str = "train",
              root: Path = FASHION_MNIST) -> dict[str, int]:
    """``python -m train make-data``: write the dataset; refuses a non-empty ``dest``."""
    dest = Path(dest)
    if name not in DATASETS:
        raise TrainError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    if split not in ("train", "test"):
        raise TrainError(f"--split must be train or test, got {split!r}")
    if per_class is not None and per_class < 1:
        raise TrainError(f"--per-class must be >= 1, got {per_class}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TrainError(f"{dest}: exists and is not an empty folder; choose a new DEST")
    index = None
    if name == "fashion-mnist":
        images, labels, names = fashion_mnist(split, root)
    elif name == "digits":
        images, labels, names, index = digits(split)
    else:
        images, labels, names = shapes(split, per_class or 12)
    return write_pngs(dest, images, labels, names, per_class, index)


"""Read a folder of labelled images in any of the three training layouts, without pandas or torch.

The one reader of labelled folders: ``edge-infer eval`` scores against it and ``train.data``
trains from it, so both see the same images with the same labels.

* one folder per class: ``DATA/<label>/*.jpg`` (no split given);
* ``DATA/train/<label>/...`` and ``DATA/valid/<label>/...`` (the split is given);
* ``DATA/labels.csv`` with columns ``path,label`` and optionally ``is_valid`` (paths relative
  to DATA; rows whose file is gone, e.g. quarantined, drop out).

A label is the name of the image's own folder. Hidden files and folders (``.quarantine``) are
skipped; suffixes come from ``edge_infer.files.IMAGE_SUFFIXES``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .files import find_images

__all__ = ["LabelledImage", "LabelledFolder", "read_labelled", "LAYOUTS"]

LAYOUTS = ("folders", "train-valid", "csv")
TRUE, FALSE = {"true", "1", "1.0", "yes"}, {"false", "0", "0.0", "no"}


@dataclass(frozen=True)
class LabelledImage:
    """One image: ``path`` relative to the data folder (posix), its ``label``, and whether it is
    in the validation split (None: the layout does not say)."""

    path: str
    label: str
    is_valid: bool | None = None


@dataclass(frozen=True)
class LabelledFolder:
    root: Path
    layout: str  # one of LAYOUTS
    items: tuple[LabelledImage, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels present, sorted."""
        return tuple(sorted({i.label for i in self.items}))

    def split(self, which: str) -> "LabelledFolder":
        """Only the ``train`` or ``valid`` images (``all``: unchanged); refuses a layout without one."""
        if which == "all":
            return self
        if which not in ("train", "valid"):
            raise ValueError(f"split must be all, train or valid, got {which!r}")
        if any(i.is_valid is None for i in self.items):
            raise DataError(f"{self.root}: the {self.layout} layout gives no train/valid split; "
                            "use all the images (split 'all')")
        return LabelledFolder(self.root, self.layout, tuple(i for i in self.items if i.is_valid == (which == "valid")))

    def paths(self) -> list[str]:
        """Full paths, in item order (what ``Classifier.classify_files`` takes)."""
        return [os.path.join(self.root, i.path) for i in self.items]


def read_labelled(data: str | os.PathLike) -> LabelledFolder:
    """All labelled images under ``data``, sorted by path within each layout's own order."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if (root / "labels.csv").is_file():
        return LabelledFolder(root, "csv", _read_csv(root, root / "labels.csv"))
    if (root / "train").is_dir() and (root / "valid").is_dir():
        items = tuple(_item(root, p, split == "valid") for split in ("train", "valid")
                      for p in find_images(root / split, recursive=True))
        return LabelledFolder(root, "train-valid", items)
    items = tuple(_item(root, p, None) for p in find_images(root, recursive=True) if p.parent != root)
    if not items:
        raise DataError(f"{root}: no images found; expected DATA/<label>/*.jpg, DATA/train + "
                        "DATA/valid, or DATA/labels.csv")
    return LabelledFolder(root, "folders", items)


def _item(root: Path, path: Path, is_valid: bool | None) -> LabelledImage:
    return LabelledImage(path.relative_to(root).as_posix(), path.parent.name, is_valid)


def _read_csv(root: Path, table: Path) -> tuple[LabelledImage, ...]:
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{table}: missing column(s) {sorted(missing)}; expected path,label[,is_valid]")
        items = []
        for row in reader:
            if not row.get("path") or not row.get("label"):
                raise DataError(f"{table}: line {reader.line_num}: empty path or label")
            if (root / row["path"]).is_file():  # quarantined or deleted files drop out
                items.append(LabelledImage(row["path"], row["label"],
                                           _flag(row.get("is_valid"), table, reader.line_num)))
    return tuple(items)


def _flag(value: str | None, table: Path, line: int) -> bool | None:
    text = (value or "").strip().lower()
    if not text:
        return None
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise DataError(f"{table}: line {line}: is_valid is {value!r}; expected True/False, 1/0 or empty")

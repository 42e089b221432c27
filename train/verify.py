"""``python -m train verify DATA``: decode every image; move the broken ones aside, never delete.

Each image is decoded with ``edge_infer.preprocess.load_image``, the loader that training and the
runtime use, so "verified" means exactly "training will not trip over it". An image that fails
moves to ``DATA/.quarantine/<its path relative to DATA>`` and gets a line in
``DATA/.quarantine/log.jsonl`` (``path``, ``moved_to``, ``reason``, ``time``); ``train.data``
skips hidden folders, so quarantined files drop out of training, and moving one back restores it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from edge_infer.files import IMAGE_SUFFIXES, find_images
from edge_infer.preprocess import load_image

from .errors import TrainError

__all__ = ["IMBALANCE", "Quarantined", "VerifyReport", "verify", "check_files", "quarantine",
           "QUARANTINE"]

QUARANTINE = ".quarantine"
IMBALANCE = 3.0  # largest class / smallest class above this: warn


@dataclass(frozen=True)
class Quarantined:
    path: str      # relative to the data folder, where it was
    moved_to: str  # relative to the data folder
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    quarantined: tuple[Quarantined, ...]
    counts: dict[str, int]  # images per label after quarantine

    @property
    def imbalance(self) -> float:
        """Largest class / smallest class (``inf`` when a label has no image left)."""
        values = list(self.counts.values())
        return max(values) / min(values) if values and min(values) else float("inf")


def verify(data: str | Path, *, progress: bool = True) -> VerifyReport:
    """Decode every image file under ``data`` (hidden folders skipped); quarantine the bad ones."""
    from .data import find_items  # fastai: imported only when needed

    data = Path(data)
    if not data.is_dir():
        raise TrainError(f"{data}: no such folder")
    files = find_images(data, recursive=True)
    if not files:
        raise TrainError(f"{data}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    moved = check_files(files, data, progress=progress)
    try:
        df, _ = find_items(data)
    except (FileNotFoundError, ValueError):  # every image was broken
        counts: dict[str, int] = {}
    else:
        counts = {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()}
    return VerifyReport(len(files), tuple(moved), counts)


def check_files(files: Iterable[Path], root: Path, *, progress: bool = False) -> list[Quarantined]:
    """Decode ``files`` (all under ``root``); move those that fail to ``root/.quarantine``."""
    files = list(files)
    moved = []
    for path in tqdm(files, desc="verify", unit="image", disable=not progress, leave=False):
        try:
            load_image(path)
        except Exception as e:  # noqa: BLE001 - whatever Pillow raises, the file cannot be trained on
            moved.append(quarantine(path, root, _reason(e, path)))
    return moved


def quarantine(path: Path, root: Path, reason: str) -> Quarantined:
    """Move ``path`` to ``root/.quarantine/<relative path>`` (never overwriting) and log it."""
    rel = Path(os.path.relpath(path, root))
    folder = root / QUARANTINE
    target = folder / rel
    n = 1
    while target.exists():  # the same name quarantined before: keep both
        target = folder / rel.with_name(f"{rel.stem}.{n}{rel.suffix}")
        n += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(target))
    record = Quarantined(rel.as_posix(), target.relative_to(root).as_posix(), reason)
    with open(folder / "log.jsonl", "a") as log:
        log.write(json.dumps({"path": record.path, "moved_to": record.moved_to, "reason": reason,
                              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
    return record


def _reason(error: Exception, path: Path) -> str:
    text = " ".join(str(error).split())
    prefix = f"{path}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    return text if type(error).__name__ == "ImageError" else f"{type(error).__name__}: {text}"

"""``python -m train verify DATA``: decode every image; move the broken ones aside, never delete.

Each image is decoded with ``edge_infer.preprocess.load_image``, the loader that training and the
runtime use, so "verified" means exactly "training will not trip over it". One that fails is
quarantined through the one journal (``train.quarantine``, ``why`` ``verify``, with the reason),
so ``python -m train clean --undo DATA`` puts it back. All files are decoded first and only then
moved, so the journal's lock is not held for the length of a decode pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from edge_infer.files import IMAGE_SUFFIXES, find_images
from edge_infer.preprocess import load_image

from .errors import TrainError
from .quarantine import QUARANTINE, Journal, new_batch

__all__ = ["IMBALANCE", "Quarantined", "VerifyReport", "verify", "check_files", "QUARANTINE"]

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
        smallest = min(values, default=0)
        return max(values) / smallest if smallest else float("inf")


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


def check_files(files: Iterable[Path], root: Path, *, progress: bool = False, why: str = "verify",
                batch: str | None = None) -> list[Quarantined]:
    """Decode ``files`` (all under ``root``); move those that fail to ``root/.quarantine``,
    journalled as ``why`` in ``batch`` (a new one unless given: download passes one per run)."""
    bad = []
    for path in tqdm(list(files), desc="verify", unit="image", disable=not progress, leave=False):
        try:
            load_image(path)
        except Exception as e:  # noqa: BLE001 - whatever Pillow raises, the file cannot be trained on
            bad.append((Path(os.path.relpath(path, root)).as_posix(), _reason(e, path)))
    if not bad:
        return []
    journal, batch, moved = Journal(root), batch or new_batch(), []
    with journal.batch():
        for rel, reason in bad:
            record = journal.quarantine(rel, why=why, batch=batch, reason=reason)
            moved.append(Quarantined(rel, record["dst"], reason))
    return moved


def _reason(error: Exception, path: Path) -> str:
    text = " ".join(str(error).split()).removeprefix(f"{path}: ")
    return text if type(error).__name__ == "ImageError" else f"{type(error).__name__}: {text}"

"""What `clean` shows: the run's images, highest loss first, with their current labels.

Read from the run folder (docs/run-folder.md; ``export.run_folder.RunFolder`` reads
``train.json`` and ``split.csv``): ``train.json`` gives the data folder, its layout and the
labels; ``top_losses.csv`` (written by ``interpret``) gives ``predicted``, ``probability`` and
``loss`` per image; ``split.csv`` gives the split where ``top_losses.csv`` is missing. The
current label of an image always comes from the data folder itself (``train.data.find_items``),
so an image relabelled earlier shows its new label, and one moved into ``.quarantine`` is gone. Paths in ``top_losses.csv`` are followed through the journal, so a
relabelled image keeps its loss.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from export.run_folder import RunFolder

from ..errors import CleanError
from ..quarantine import Journal

__all__ = ["CleanError", "Item", "load_items", "data_path"]


@dataclass(frozen=True)
class Item:
    """One image of the data folder; ``predicted``/``probability``/``loss`` are None when the
    run has no ``top_losses.csv`` row for it."""

    path: str  # relative to the data folder, posix
    label: str
    predicted: str | None = None
    probability: float | None = None
    loss: float | None = None
    split: str | None = None


def data_path(data: Path, rel: str) -> Path:
    """``DATA/rel`` for a path that stays inside the data folder and outside hidden folders.

    The one gate for every path that comes from a user, a CSV or the page: absolute paths,
    ``..``, hidden parts (``.quarantine``) and symlinks leading out of the folder are refused.
    """
    if not rel or "\x00" in rel or "\\" in rel:
        raise CleanError(f"{rel!r}: not a path inside the data folder")
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise CleanError(f"{rel}: not a path inside the data folder (absolute, '..' or hidden)")
    root = Path(data).resolve()
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root):
        raise CleanError(f"{rel}: leads outside the data folder")
    return path


def current_items(run: RunFolder) -> tuple[dict[str, Item], str]:
    """Every labelled image in the data folder now, by path, and the layout
    (``train.data.find_items``: what the next ``fit`` will see)."""
    import pandas as pd

    from train.data import find_items  # fastai comes with it: imported only when needed

    try:
        df, layout = find_items(run.data)
    except (ValueError, FileNotFoundError) as e:
        raise CleanError(str(e)) from None
    out = {}
    for path, label, valid in zip(df["path"], df["label"], df["is_valid"], strict=True):
        split = None if pd.isna(valid) else ("valid" if bool(valid) else "train")
        out[str(path)] = Item(path=str(path), label=str(label), split=split)
    return out, layout


def load_items(run: RunFolder, top: int | None = None) -> list[Item]:
    """The images of the run, highest loss first, then those without a loss (by path)."""
    now, _ = current_items(run)
    moved = Journal(run.data).moved_paths()
    splits = run.split.split_of()
    ranked: list[Item] = []
    seen: set[str] = set()
    for row in _read_top_losses(run.folder / "top_losses.csv"):
        path = moved.get(row["path"], row["path"])
        if path not in now or path in seen:
            continue  # deleted (quarantined) since, or listed twice
        seen.add(path)
        ranked.append(Item(path=path, label=now[path].label, predicted=row["predicted"] or None,
                           probability=_float(row.get("probability")), loss=_float(row.get("loss")),
                           split=row.get("split") or now[path].split or splits.get(row["path"])))
    ranked.sort(key=lambda it: -it.loss if it.loss is not None else math.inf)
    rest = [Item(path=p, label=it.label, split=it.split or splits.get(p))
            for p, it in sorted(now.items()) if p not in seen]
    items = ranked + rest
    return items[:top] if top else items


def _read_top_losses(path: Path) -> list[dict]:
    if not path.is_file():
        return []  # no `interpret` yet: the page still lists every image, without losses
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            missing = {"path", "label", "predicted", "loss"} - set(reader.fieldnames or ())
            if missing:
                raise CleanError(f"{path}: missing column(s) {sorted(missing)}; expected "
                                 "path,label,predicted,probability,loss,split (docs/run-folder.md)")
            return list(reader)
        except (csv.Error, UnicodeDecodeError) as e:
            why = e.reason if isinstance(e, UnicodeDecodeError) else e
            raise CleanError(f"{path}: not readable as UTF-8 CSV ({why}); "
                             "write it again with python -m train interpret") from None


def _float(value: str | None) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


"""Read a training run folder (docs/run-folder.md): the learner, ``train.json`` and ``split.csv``.

Everything export needs from training comes through ``load_run``, which checks the folder first
so that a wrong path is one line, not a pickle traceback.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from edge_infer.metadata import Preprocess

from .errors import ExportError

__all__ = ["Run", "load_run"]

REQUIRED = ("learner.pkl", "train.json", "split.csv")
SPLIT_COLUMNS = {"path", "label", "split"}


@dataclass(frozen=True)
class Run:
    """A loaded run folder: the fastai learner (on the CPU) and the facts written beside it."""

    folder: Path
    learn: Any                # fastai Learner
    info: dict                # train.json
    split: pd.DataFrame       # split.csv: path (relative to data), label, split
    data: Path                # the data folder named in train.json
    pre: Preprocess           # train.json["preprocess"]
    labels: tuple[str, ...]   # learn.dls.vocab

    def relative(self, split: str) -> list[str]:
        """split.csv's paths (relative to ``data``) of one split: "train" or "valid"."""
        return list(self.split.loc[self.split["split"] == split, "path"])

    def files(self, split: str) -> list[Path]:
        """The images of one split, in split.csv order."""
        return [self.data / p for p in self.relative(split)]

    def split_labels(self, split: str) -> list[str]:
        return list(self.split.loc[self.split["split"] == split, "label"])

    def truth(self, split: str) -> list[int]:
        """The label index of each image of ``split``, in the order of ``files(split)``."""
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[label] for label in self.split_labels(split)]

    def check_files(self, split: str) -> list[Path]:
        """``files(split)``, refusing an empty split or a file that has gone since training."""
        files = self.files(split)
        if not files:
            raise ExportError(f"{self.folder / 'split.csv'}: no '{split}' images listed")
        gone = next((f for f in files if not f.is_file()), None)
        if gone is not None:
            raise ExportError(f"{gone}: listed in {self.folder / 'split.csv'} but missing; "
                              "the data folder changed after training")
        return files


def load_run(folder: str | Path) -> Run:
    """Check and load ``folder``; every problem is an ``ExportError`` naming the file."""
    folder = Path(folder)
    if not folder.exists():
        raise ExportError(f"{folder}: no such run folder")
    if not folder.is_dir():
        raise ExportError(f"{folder}: is a file, not a run folder (python -m train fit --out RUN writes one)")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise ExportError(f"{folder}: not a run folder, {', '.join(missing)} missing "
                          "(python -m train fit --out RUN writes one; see docs/run-folder.md)")
    info = _read_train_json(folder / "train.json")
    pre = _preprocess(folder / "train.json", info)
    split = _read_split(folder / "split.csv")
    learn = _load_learner(folder / "learner.pkl")
    labels = tuple(str(v) for v in learn.dls.vocab)
    if list(labels) != [str(v) for v in info.get("labels", labels)]:
        raise ExportError(f"{folder / 'learner.pkl'}: labels {list(labels)} differ from train.json's "
                          f"{info['labels']}; the run folder is inconsistent, train again")
    unknown = sorted(set(split["label"]) - set(labels))
    if unknown:
        raise ExportError(f"{folder / 'split.csv'}: labels {unknown} are not among the learner's {list(labels)}")
    return Run(folder, learn, info, split, Path(info["data"]), pre, labels)


def _read_train_json(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("data", "preprocess") if not isinstance(info, dict) or k not in info]
    if missing:
        raise ExportError(f"{path}: missing key(s) {missing}; see docs/run-folder.md")
    return info


def _preprocess(path: Path, info: dict) -> Preprocess:
    try:
        return Preprocess.from_dict(info["preprocess"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ExportError(f"{path}: invalid 'preprocess' ({e})") from None


def _read_split(path: Path) -> pd.DataFrame:
    try:
        split = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = SPLIT_COLUMNS - set(split.columns)
    if missing:
        raise ExportError(f"{path}: missing column(s) {sorted(missing)}; expected path,label,split")
    return split


def _load_learner(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # fastai's import (torch.jit deprecations) and its "pickle is insecure" notice on
            # every load: nothing the user can act on.
            warnings.simplefilter("ignore")
            import train.data  # noqa: F401  the pickle names train.data.open_image
            from fastai.learner import load_learner

            learn = load_learner(path, cpu=True)
    except Exception as e:  # pickle, zip, torch and attribute errors all mean "not a learner"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"{path}: cannot load the fastai learner ({type(e).__name__}: {first})") from None
    learn.model.eval()
    return learn

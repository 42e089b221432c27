"""A training run folder with its learner loaded: what ``python -m export`` works from.

``train.json`` and ``split.csv`` are read and checked by ``export.run_folder.RunFolder`` (the one
reader, shared with ``train``); this adds the fastai learner and the checks that need it, so a
wrong path is one line, not a pickle traceback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_infer.errors import first_line

from .errors import ExportError
from .run_folder import SPLIT_CSV, RunFolder

__all__ = ["Run", "load_run", "load_learner"]


@dataclass(frozen=True)
class Run(RunFolder):
    """A checked run folder plus its fastai learner (on the CPU), whose vocab is train.json's labels.

    Made by ``load_run``, not ``RunFolder.load``, which does not read the learner."""

    learn: Any = field(repr=False)  # fastai Learner

    def truth(self, split: str) -> list[int]:
        """The label index of each image of ``split``, in split.csv order."""
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[label] for label in self.split.labels(split)]

    def check_files(self, split: str) -> list[Path]:
        """The images of ``split``, refusing an empty split or a file that has gone since training."""
        files = self.files(split)
        if not files:
            raise ExportError(f"{self.folder / SPLIT_CSV}: no '{split}' images listed")
        gone = next((f for f in files if not f.is_file()), None)
        if gone is not None:
            raise ExportError(f"{gone}: listed in {self.folder / SPLIT_CSV} but missing; "
                              "the data folder changed after training")
        return files


def load_run(folder: str | Path) -> Run:
    """Check ``folder`` (``RunFolderError``), then load its learner (``ExportError``)."""
    run = RunFolder.load(folder, learner=True)
    learn = load_learner(run.learner)
    labels = tuple(str(v) for v in learn.dls.vocab)
    if labels != run.labels:
        raise ExportError(f"{run.learner}: labels {list(labels)} differ from train.json's "
                          f"{list(run.labels)}; the run folder is inconsistent, train again")
    return Run(run.folder, run.info, run.split, learn)


def load_learner(path: Path) -> Any:
    """The fastai learner pickled at ``path``, on the CPU, in eval mode: the one loader of
    ``learner.pkl`` (export, ``train interpret``, the benchmarks); ``ExportError`` if it is not one."""
    try:
        with warnings.catch_warnings():
            # fastai's import (torch.jit deprecations) and its "pickle is insecure" notice on
            # every load: nothing the user can act on.
            warnings.simplefilter("ignore")
            from fastai.learner import load_learner

            import train.data  # noqa: F401  the pickle names train.data.open_image

            learn = load_learner(path, cpu=True)
    except Exception as e:  # pickle, zip, torch and attribute errors all mean "not a learner"
        raise ExportError(f"{path}: cannot load the fastai learner ({type(e).__name__}: {first_line(e)})") from None
    learn.model.eval()
    return learn

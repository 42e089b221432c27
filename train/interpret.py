"""``python -m train interpret RUN``: where the model goes wrong, for people and for ``clean``.

Loads ``RUN/learner.pkl`` with ``load_learner`` and predicts every image of ``split.csv`` through
non-augmented DataLoaders (``learn.dls.test_dl(items, with_labels=True)``: the validation
pipeline), then writes ``top_losses.csv`` (both splits: a high-loss training image is often a
mislabelled one, which ``clean`` shows first), and, for the validation split as in the course
(``ClassificationInterpretation``), ``confusion_matrix.png``, ``most_confused.csv`` and
``top_losses.png``; docs/run-folder.md gives their columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from fastai.vision.all import ClassificationInterpretation

from export.run import load_learner
from export.run_folder import SPLIT_CSV, RunFolder

from .errors import TrainError

__all__ = ["Interpretation", "interpret", "TOP_LOSSES_COLUMNS"]

TOP_LOSSES_COLUMNS = ("path", "label", "predicted", "probability", "loss", "split")


@dataclass(frozen=True)
class Interpretation:
    top_losses: pd.DataFrame
    most_confused: pd.DataFrame
    valid_error_rate: float
    missing: int  # split.csv rows whose file is gone (quarantined or cleaned since training)


def interpret(run: str | Path, *, k: int = 9) -> Interpretation:
    """Write the files listed above into ``run`` and return the tables.

    A damaged run folder is a ``RunFolderError``; no validation image left is a ``TrainError``."""
    folder = RunFolder.load(run, learner=True)
    run, data = folder.folder, folder.data
    split = folder.split.frame()
    present = split["path"].map(lambda p: (data / p).is_file())
    split = split[present].reset_index(drop=True)
    learn = load_learner(folder.learner)
    tables, valid = [], None
    for name in ("train", "valid"):
        items = split[split["split"] == name][["path", "label"]].reset_index(drop=True)
        if items.empty:
            continue
        dl = learn.dls.test_dl(items, with_labels=True)
        probs, _, losses = learn.get_preds(dl=dl, with_loss=True)
        best = probs.max(dim=1)
        tables.append(items.assign(predicted=[str(learn.dls.vocab[i]) for i in best.indices],
                                   probability=best.values.numpy(), loss=losses.numpy(), split=name))
        if name == "valid":
            valid = ClassificationInterpretation(learn, dl, losses)
    if valid is None:
        raise TrainError(f"{run / SPLIT_CSV}: no validation images left in {data}")
    top = pd.concat(tables, ignore_index=True).sort_values("loss", ascending=False, kind="stable")
    top.to_csv(run / "top_losses.csv", index=False, columns=list(TOP_LOSSES_COLUMNS))
    confused = pd.DataFrame(valid.most_confused(min_val=1), columns=["actual", "predicted", "count"])
    confused.to_csv(run / "most_confused.csv", index=False)
    _plots(valid, run, k)
    v = top[top["split"] == "valid"]
    return Interpretation(top.reset_index(drop=True), confused,
                          float((v["label"] != v["predicted"]).mean()), int((~present).sum()))


def _plots(interp: ClassificationInterpretation, run: Path, k: int) -> None:
    n = len(interp.vocab)
    plots = {"confusion_matrix.png": lambda: interp.plot_confusion_matrix(figsize=(max(4, 0.6 * n + 2),) * 2),
             "top_losses.png": lambda: interp.plot_top_losses(min(k, len(interp.losses)), figsize=(11, 11))}
    with _pyplot_on_agg() as plt:
        for name, draw in plots.items():
            draw()  # fastai draws on pyplot's current figure
            plt.gcf().savefig(run / name, bbox_inches="tight", dpi=100)
            plt.close()


@contextmanager
def _pyplot_on_agg() -> Iterator:
    """pyplot on Agg for the block, then the caller's backend again.

    fastai draws these two plots through pyplot, so they need a backend; Agg writes files with no
    display (training machines often have none, or a stale one), and switching only here leaves
    whoever imported this module the backend they chose.
    """
    import matplotlib.pyplot as plt

    before = plt.get_backend()
    plt.switch_backend("agg")
    try:
        yield plt
    finally:
        plt.switch_backend(before)

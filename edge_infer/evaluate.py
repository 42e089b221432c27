"""Score an exported model against a labelled folder: what ``edge-infer eval`` reports.

The answer to "how good is this ``.onnx`` file on my data", from the runtime alone (no torch):
accuracy, per-class precision/recall/F1, the most confused pairs and the files that failed to
decode. The folder is read by ``edge_infer.labelled`` (the reader training uses) and classified
by ``Classifier.classify_files``, so ``eval`` runs at the speed of ``predict``; scoring is a
confusion matrix over the model's labels, negligible next to decoding.

Outputs: ``eval.json`` (the summary), ``predictions.csv`` (one row per file) and
``confusion_matrix.png`` when matplotlib is importable (never a dependency of the wheel).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

from .classifier import Classifier, FileResult
from .errors import DataError
from .labelled import LabelledFolder, read_labelled

__all__ = ["Outcome", "ClassScore", "EvalReport", "evaluate", "score",
           "write_report", "check_new_folder", "labelled_for", "plot_confusion"]

MOST_CONFUSED = 10


@dataclass(frozen=True)
class Outcome:
    """One file: its true label and the model's answer, or the one-line error that stopped it."""

    path: str
    actual: str
    predicted: str | None
    score: float | None
    error: str | None = None


@dataclass(frozen=True)
class ClassScore:
    """Precision and recall are 0.0 where undefined (no prediction of / no image of the class)."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int  # images of this label that decoded


@dataclass(frozen=True)
class EvalReport:
    model: str
    data: str
    layout: str
    split: str
    labels: tuple[str, ...]  # the model's labels: the confusion matrix's rows and columns
    outcomes: tuple[Outcome, ...]

    @cached_property
    def scored(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.error is None)

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.error is not None)

    @property
    def correct(self) -> int:
        return sum(o.predicted == o.actual for o in self.scored)

    @property
    def accuracy(self) -> float:
        """Correct / decoded images (failed files are listed apart, not counted wrong)."""
        return self.correct / len(self.scored) if self.scored else 0.0

    @cached_property
    def confusion(self) -> np.ndarray:
        """int64 [C, C]: row = actual label, column = predicted label, in ``labels`` order."""
        index = {label: i for i, label in enumerate(self.labels)}
        matrix = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)
        for o in self.scored:
            matrix[index[o.actual], index[o.predicted]] += 1  # type: ignore[index]
        return matrix

    @property
    def per_class(self) -> list[ClassScore]:
        """Labels that occur in the data or in the predictions, in the model's order."""
        m = self.confusion
        tp, support, predicted = np.diag(m), m.sum(axis=1), m.sum(axis=0)
        out = []
        for i, label in enumerate(self.labels):
            if support[i] == 0 and predicted[i] == 0:
                continue
            p = tp[i] / predicted[i] if predicted[i] else 0.0
            r = tp[i] / support[i] if support[i] else 0.0
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            out.append(ClassScore(label, float(p), float(r), float(f1), int(support[i])))
        return out

    @property
    def macro(self) -> dict[str, float]:
        """Unweighted means over the labels present in the data."""
        present = [c for c in self.per_class if c.support]
        return {k: float(np.mean([getattr(c, k) for c in present])) if present else 0.0
                for k in ("precision", "recall", "f1")}

    def most_confused(self, k: int = MOST_CONFUSED) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) off the diagonal, largest first."""
        m = self.confusion.copy()
        np.fill_diagonal(m, 0)
        pairs = [(self.labels[a], self.labels[p], int(m[a, p])) for a, p in zip(*np.nonzero(m), strict=True)]
        return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))[:k]

    def to_dict(self) -> dict:
        return {
            "model": self.model, "data": self.data, "layout": self.layout, "split": self.split,
            "images": len(self.outcomes), "scored": len(self.scored), "failed_count": len(self.failed),
            "correct": self.correct, "accuracy": self.accuracy, "macro": self.macro,
            "per_class": [c.__dict__ for c in self.per_class],
            "most_confused": [{"actual": a, "predicted": p, "count": n} for a, p, n in self.most_confused()],
            "confusion": {"labels": list(self.labels), "matrix": self.confusion.tolist()},
            "failed": [{"path": o.path, "error": o.error} for o in self.failed],
        }

    def to_text(self) -> str:
        width = max([len(c.label) for c in self.per_class] + [9])
        lines = [
            f"model     {self.model} ({len(self.labels)} labels)",
            f"data      {self.data} ({self.layout} layout, split {self.split}: {len(self.outcomes)} images, "
            f"{len(self.failed)} failed)",
            f"accuracy  {self.accuracy:.4f} ({self.correct} of {len(self.scored)})",
            "",
            f"{'label':<{width}}  precision  recall  f1      support",
        ]
        lines += [f"{c.label:<{width}}  {c.precision:9.4f}  {c.recall:6.4f}  {c.f1:6.4f}  {c.support:7d}"
                  for c in self.per_class]
        m = self.macro
        lines.append(f"{'macro avg':<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  "
                     f"{len(self.scored):7d}")
        confused = self.most_confused()
        if confused:
            lines += ["", "most confused (actual -> predicted: images)"]
            lines += [f"  {a} -> {p}: {n}" for a, p, n in confused]
        if self.failed:
            lines += ["", f"failed to decode ({len(self.failed)})"] + [f"  {o.error}" for o in self.failed]
        return "\n".join(lines)


def score(folder: LabelledFolder, results: Iterable[FileResult], *, model: str, labels: Iterable[str],
          split: str = "all") -> EvalReport:
    """Pair ``folder``'s items with ``results`` (same order, as ``classify_files`` yields them)."""
    outcomes = []
    for item, path, result in zip(folder.items, folder.paths(), results, strict=True):
        if result.source != path:
            raise ValueError(f"results out of order: {result.source} where {path} was expected")
        pred = result.prediction
        outcomes.append(Outcome(path, item.label, pred.label if pred else None, pred.score if pred else None,
                                str(result.error) if result.error is not None else None))
    return EvalReport(model, str(folder.root), folder.layout, split, tuple(labels), tuple(outcomes))


def evaluate(classifier: Classifier, data: str | os.PathLike, *, split: str = "all",
             batch_size: int = 8, workers: int | None = None) -> EvalReport:
    """Classify every labelled image under ``data`` (any training layout) and score the answers.

    >>> evaluate(Classifier.load("fm.onnx"), "fm-test").accuracy
    """
    folder = labelled_for(classifier, data, split)
    results = classifier.classify_files(folder.paths(), batch_size=batch_size, workers=workers)
    return score(folder, results, model=classifier.source, labels=classifier.labels, split=split)


def labelled_for(classifier: Classifier, data: str | os.PathLike, split: str) -> LabelledFolder:
    """The folder's images of ``split``, after checking that its labels are the model's."""
    folder = read_labelled(data).split(split)
    if not folder.items:
        raise DataError(f"{data}: no images in split {split!r}")
    unknown = [label for label in folder.labels if label not in classifier.labels]
    if unknown:
        raise DataError(f"{data}: label(s) {unknown} are not labels of {classifier.source}; the folder's "
                        f"labels: {list(folder.labels)}; the model's labels: {list(classifier.labels)}")
    return folder


def write_report(report: EvalReport, out: str | os.PathLike) -> list[Path]:
    """``eval.json``, ``predictions.csv`` and (with matplotlib) ``confusion_matrix.png`` in ``out``.

    ``out`` is created; an existing non-empty folder is refused so nothing of the user's is
    overwritten.
    """
    out = check_new_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "actual", "predicted", "score", "correct", "error"])
        for o in report.outcomes:
            writer.writerow([o.path, o.actual, o.predicted or "", "" if o.score is None else repr(o.score),
                             "" if o.error else int(o.predicted == o.actual), o.error or ""])
    written = [out / "eval.json", out / "predictions.csv"]
    if plot_confusion(report, out / "confusion_matrix.png"):
        written.append(out / "confusion_matrix.png")
    return written


def check_new_folder(out: str | os.PathLike) -> Path:
    """``out`` as a Path, if it is free to write in (missing or empty); else a ``DataError``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; choose a new output folder")
    return out


def plot_confusion(report: EvalReport, path: Path) -> bool:
    """The confusion matrix as a PNG; False (nothing written) when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone
    except ImportError:
        return False
    m, n = report.confusion, len(report.labels)
    side = max(4.0, 0.5 * n + 2)
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="actual",
           title=f"{Path(report.model).name}: accuracy {report.accuracy:.4f}")
    ax.set_xticklabels(report.labels, rotation=90)
    ax.set_yticklabels(report.labels)
    if n <= 30:  # beyond that the numbers do not fit in the cells
        for (a, p), count in np.ndenumerate(m):
            ax.text(p, a, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > m.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True

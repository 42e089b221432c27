"""Parity in two tiers, each returning a frozen result with ``passed`` (``to_dict``: its section of
parity.json; ``SUMMARY``: the keys of it the file's metadata keeps).

* tensor tier: the same uint8 pixels through ``Deployable`` in torch and through onnxruntime
  (random and real images, batch 1, 3 and 8, so the dynamic axis is exercised);
  ``|ort - torch| <= ATOL + RTOL * |torch|`` on every probability.
* file tier: every validation image through the learner's own pipeline
  (``learn.dls.test_dl`` + ``get_preds``: fastai's loading, ``Resize``, ``Normalize``) and through
  ``edge_infer.Classifier`` (its decoding and resize, then the graph): top-1 equal on every file
  and ``max |p_fastai - p_onnx| <= FILE_MAX_DIFF``. Decoding is the same code on both sides
  (``train.data.open_image`` is ``edge_infer.preprocess.load_image``), so a breach means the
  resize port or the graph is wrong, not JPEG noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from edge_infer import Classifier

from .wrap import Deployable

__all__ = ["RTOL", "ATOL", "FILE_MAX_DIFF", "FILE_TOLERANCE", "BATCHES", "TensorCase", "TensorParity", "FileParity",
           "tensor_tier", "file_tier", "probability_matrix"]

RTOL, ATOL = 1e-3, 1e-4
FILE_MAX_DIFF = 1e-3
FILE_TOLERANCE = {"top1_agreement": 1.0, "max_prob_diff": FILE_MAX_DIFF}
BATCHES = (1, 3, 8)


@dataclass(frozen=True)
class TensorCase:
    input: str  # "random" or "real"
    batch: int
    max_abs_diff: float
    passed: bool


@dataclass(frozen=True, kw_only=True)
class TensorParity:
    """The tensor tier; the fields are parity.json's ``tensor`` keys, in order."""

    SUMMARY: ClassVar[tuple[str, ...]] = ("rtol", "atol", "batches", "max_abs_diff", "passed")
    rtol: float = RTOL
    atol: float = ATOL
    batches: tuple[int, ...] = BATCHES
    real_images: int
    max_abs_diff: float
    passed: bool
    cases: tuple[TensorCase, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "batches": list(self.batches), "cases": [asdict(c) for c in self.cases]}


@dataclass(frozen=True, kw_only=True)
class FileParity:
    """The file tier; the fields are parity.json's ``files`` keys, in order."""

    SUMMARY: ClassVar[tuple[str, ...]] = ("files", "top1_agreement", "max_prob_diff", "tolerance",
                                          "learner_accuracy", "onnx_accuracy", "passed")
    files: int
    top1_equal: int
    top1_agreement: float
    max_prob_diff: float
    worst_file: str
    tolerance: dict[str, float] = field(default_factory=lambda: dict(FILE_TOLERANCE))
    learner_accuracy: float
    onnx_accuracy: float
    disagreements: tuple[str, ...]  # the first 10
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "disagreements": list(self.disagreements)}


def tensor_tier(model: Deployable, clf: Classifier, real: np.ndarray, *, seed: int = 0) -> TensorParity:
    """Deployable (torch) vs the ONNX graph (onnxruntime) on the same pixels."""
    h, w = clf.info.preprocess.size
    rng = np.random.default_rng(seed)
    cases: list[TensorCase] = []
    for batch in BATCHES:
        inputs = {"random": rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8),
                  "real": np.resize(real, (batch, h, w, 3))}  # repeats images when fewer than batch
        for kind, pixels in inputs.items():
            with torch.no_grad():
                want = model(torch.from_numpy(pixels)).numpy()
            got = clf.probabilities(pixels)
            diff = np.abs(got - want)
            cases.append(TensorCase(kind, batch, float(diff.max()), bool(np.all(diff <= ATOL + RTOL * np.abs(want)))))
    return TensorParity(real_images=int(len(real)), max_abs_diff=max(c.max_abs_diff for c in cases),
                        passed=all(c.passed for c in cases), cases=tuple(cases))


def learner_probabilities(learn, data: Path, relative: list[str]) -> np.ndarray:
    """fastai's own prediction: split.csv rows through the learner's DataLoaders pipeline."""
    dl = learn.dls.test_dl(_items(learn, data, relative))
    with learn.no_bar(), learn.no_logging():
        probs, _ = learn.get_preds(dl=dl)
    return probs.float().numpy()


def _items(learn, data: Path, relative: list[str]):
    """What the learner's item pipeline expects for these files.

    ``train.data`` reads rows with ``ColReader("path", pref=<data folder at training time>)``:
    give it split.csv rows, with the prefix pointed at train.json's ``data`` (the same folder,
    unless the data moved since). A learner that reads plain paths gets absolute paths.
    """
    from fastai.data.transforms import ColReader

    readers = [t for pipe in learn.dls.tfms for t in pipe.fs
               if isinstance(t, ColReader) and list(t.cols) == ["path"]]
    if not readers:
        return [data / p for p in relative]
    for reader in readers:
        reader.pref = f"{data}/"
    return pd.DataFrame({"path": relative})


def probability_matrix(clf: Classifier, files: list[Path]) -> np.ndarray:
    """edge_infer's prediction for every file, as float [N, C] in label order."""
    preds = clf.predict_batch(files, top_k=len(clf.labels))
    return np.array([[dict(p.top_k)[label] for label in clf.labels] for p in preds], np.float32)


def file_tier(learn, clf: Classifier, data: Path, relative: list[str], truth: list[int]) -> FileParity:
    """The learner vs ``Classifier.load(model, fast_decode=False)`` on every validation file."""
    want = learner_probabilities(learn, data, relative)
    got = probability_matrix(clf, [data / p for p in relative])
    diff = np.abs(got - want).max(axis=1)
    same = got.argmax(1) == want.argmax(1)
    y = np.asarray(truth)
    return FileParity(
        files=len(relative), top1_equal=int(same.sum()), top1_agreement=float(same.mean()),
        max_prob_diff=float(diff.max()), worst_file=relative[int(diff.argmax())],
        learner_accuracy=float((want.argmax(1) == y).mean()), onnx_accuracy=float((got.argmax(1) == y).mean()),
        disagreements=tuple(relative[i] for i in np.flatnonzero(~same)[:10]),
        passed=bool(same.all() and diff.max() <= FILE_MAX_DIFF))

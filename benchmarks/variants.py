"""The ways to run the same network that the benchmark compares, behind one small interface.

* ``fastai``: ``learn.predict(path)``, what a fastai user calls: fastai's own decode, resize and
  DataLoader per call, on the learner's pickled model;
* ``torch_fp32``: PyTorch eager on ``export``'s ``Deployable`` (the module that is exported:
  uint8 NHWC in, probabilities out), fed by edge_infer's preprocessing;
* ``edge_infer_fp32`` / ``edge_infer_int8``: ``edge_infer.Classifier`` on the exported files;
* ``openvino_fp32`` / ``openvino_int8``: the same, with ``backend="openvino"`` (f32 precision),
  timed only when OpenVINO is installed (the ``openvino`` extra).

A variant is loaded once per thread count (onnxruntime fixes its thread pool when the session is
created; torch's is process-wide and set with ``torch.set_num_threads``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_infer import Classifier
from edge_infer.metadata import ModelInfo
from edge_infer.preprocess import prepare

__all__ = ["VariantSpec", "Loaded", "VARIANTS", "available_variants", "load_variant"]


@dataclass(frozen=True)
class VariantSpec:
    key: str
    title: str
    runtime: str     # fastai | torch | onnxruntime | openvino
    precision: str   # fp32 | int8

    @property
    def is_edge_infer(self) -> bool:
        """A ``Classifier`` variant (any backend): timed first, has a folder throughput."""
        return self.runtime in ("onnxruntime", "openvino")


VARIANTS = (
    VariantSpec("fastai", "fastai learn.predict", "fastai", "fp32"),
    VariantSpec("torch_fp32", "PyTorch eager fp32", "torch", "fp32"),
    VariantSpec("edge_infer_fp32", "edge_infer fp32", "onnxruntime", "fp32"),
    VariantSpec("edge_infer_int8", "edge_infer int8", "onnxruntime", "int8"),
    VariantSpec("openvino_fp32", "edge_infer OpenVINO fp32", "openvino", "fp32"),
    VariantSpec("openvino_int8", "edge_infer OpenVINO int8", "openvino", "int8"),
)


def available_variants() -> tuple[str, ...]:
    """The variant keys this install can run (the OpenVINO ones need the ``openvino`` extra)."""
    from edge_infer.backends import openvino_installed

    return tuple(v.key for v in VARIANTS if v.runtime != "openvino" or openvino_installed())


@dataclass
class Loaded:
    """A variant ready to call. ``end_to_end`` is what a user calls (timed); ``probabilities``
    gives the same answer as a vector (top-1 agreement); ``model_only`` is None where the runtime
    has no such notion (learn.predict)."""

    spec: VariantSpec
    threads: int
    load_s: float
    end_to_end: Callable[[Path], Any]                  # path -> the runtime's own answer
    probabilities: Callable[[Path], np.ndarray]        # path -> probabilities [C]
    model_only: Callable[[np.ndarray], Any] | None     # uint8 [1, H, W, 3] -> anything
    classifier: Classifier | None = None


def load_variant(spec: VariantSpec, threads: int, *, learner_pkl: Path, onnx: dict[str, Path],
                 info: ModelInfo) -> Loaded:
    """Load ``spec`` with ``threads`` threads and time the load (imports excluded)."""
    if spec.is_edge_infer:
        start = time.perf_counter()
        clf = Classifier.load(onnx[spec.precision], threads=threads, backend=spec.runtime)
        return Loaded(spec, threads, time.perf_counter() - start, clf.predict,
                      lambda p: clf.probabilities(clf.preprocess(p)[None])[0], clf.probabilities, clf)
    import torch

    from export.run import load_learner
    from export.wrap import wrap

    _import_fastai()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    learn = load_learner(learner_pkl)
    if spec.runtime == "fastai":
        def predict(path: Path) -> np.ndarray:
            with learn.no_bar():  # a progress bar per image would flood the log
                _, _, probs = learn.predict(path)
            return probs.numpy()
        return Loaded(spec, threads, time.perf_counter() - start, predict, predict, None)
    module = wrap(learn)  # the very module that export turns into ONNX
    load_s = time.perf_counter() - start
    model_only = _torch_call(module)

    def end_to_end(path: Path) -> np.ndarray:
        return model_only(prepare(path, info.preprocess)[None])[0]
    return Loaded(spec, threads, load_s, end_to_end, end_to_end, model_only)


def _import_fastai() -> None:
    # Imported before the load timer starts: the first import of fastai takes seconds and is
    # not what "load" means for a user who already runs it.
    import fastai.learner  # noqa: F401

    import train.data  # noqa: F401


def _torch_call(module) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def call(pixels: np.ndarray) -> np.ndarray:
        if not pixels.flags.writeable:  # Pillow's arrays are read-only; torch wants to own them
            pixels = pixels.copy()
        with torch.inference_mode():
            return module(torch.from_numpy(pixels)).numpy()
    return call

"""Classify more images than one machine can, with Ray Data (``pip install 'edge-infer[ray]'``).

The shape Ray Data recommends for batch inference: ``read_binary_files`` lists and reads the
files (a local folder, or URIs such as ``s3://bucket/photos/``), and ``map_batches`` with a
callable class (``Predictor``) runs the decode and the model in actors that each load the model
once. Every row comes out with ``path``, ``label``, ``score``, ``index`` and ``error``: a file
that does not decode gets its one-line error in ``error`` and the job goes on.

The model file is read once on the driver and shipped through Ray's object store, so only the
machine that starts the job needs it. The images must be readable from every node: object
storage or a shared file system on a real cluster (a local folder works on one machine).

Predictions are the single-process ones: the same bytes go through the same
``Classifier.classify_files``. Imported only when used (``import edge_infer`` does not load Ray).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from itertools import zip_longest
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import ray

from .classifier import Classifier, FileResult, Prediction, top_k_columns
from .errors import EdgeInferError, ImageError
from .evaluate import check_new_folder
from .files import IMAGE_SUFFIXES, find_images
from .preprocess import named_bytes

__all__ = ["Predictor", "predict_dataset", "write_predictions", "collect", "connect", "FORMATS"]

FORMATS = ("parquet", "csv")
ROWS_PER_CALL = 64  # images Ray Data hands an actor at once: its per-call cost stays small


class Predictor:
    """The ``map_batches`` class: one ``Classifier`` per actor, built from the model's bytes."""

    def __init__(self, model: bytes, *, name: str, top_k: int = 1, min_confidence: float | None = None,
                 batch_size: int = 8, threads: int | None = 1, fast_decode: bool = True) -> None:
        # onnxruntime opens a path: a private copy on this node, removed as soon as it is loaded.
        with tempfile.TemporaryDirectory(prefix="edge-infer-") as tmp:
            path = Path(tmp, Path(name).name or "model.onnx")
            path.write_bytes(model)
            self.classifier = Classifier.load(path, threads=threads, fast_decode=fast_decode)
        self.classifier.source = name
        self.top_k = min(top_k, len(self.classifier.labels))
        self.min_confidence, self.batch_size = min_confidence, batch_size
        self.schema = schema(self.top_k)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        paths = [str(p) for p in batch["path"]]
        images = [_named(blob, path) for blob, path in zip(batch["bytes"], paths, strict=True)]
        # One decode thread: it works on the next onnxruntime batch while this one runs.
        results = self.classifier.classify_files(images, batch_size=self.batch_size, top_k=self.top_k,
                                                 min_confidence=self.min_confidence, workers=1)
        rows = [_row(path, result, self.top_k) for path, result in zip(paths, results, strict=True)]
        return pa.Table.from_pylist(rows, schema=self.schema)


def schema(top_k: int) -> pa.Schema:
    """The output columns; typed up front so a batch where every file failed has the same schema.

    ``top1_label``/``top1_score``... are the model's best ``top_k`` answers, also when
    ``min_confidence`` turned ``label`` into ``unknown``.
    """
    fields = [("path", pa.string()), ("label", pa.string()), ("score", pa.float64()),
              ("index", pa.int64()), ("error", pa.string())]
    fields += [(name, pa.string() if name.endswith("_label") else pa.float64())
               for name in top_k_columns(top_k)]
    return pa.schema(fields)


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (``auto``, ``ray://head:10001``), or start a local one.

    Does nothing when this process is already connected (a test's ``ray.init(num_cpus=2)``).
    """
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per job on stderr
    if ray.is_initialized():
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


def predict_dataset(model: str | os.PathLike, source: str | os.PathLike | Sequence[str], *,
                    top_k: int = 1, min_confidence: float | None = None, batch_size: int = 8,
                    rows_per_call: int = ROWS_PER_CALL, concurrency: int | None = None,
                    threads: int | None = 1, recursive: bool = True,
                    fast_decode: bool = True) -> "ray.data.Dataset":
    """A lazy Ray ``Dataset`` of predictions for the images of ``source``.

    ``source``: a local folder (listed with ``find_images``, so exactly the files ``edge-infer
    predict`` would classify), a list of files, or URIs Ray reads (``s3://bucket/photos/``;
    a folder URI is filtered by ``IMAGE_SUFFIXES``). ``concurrency`` actors (default: one per
    CPU of the cluster) each run onnxruntime with ``threads`` threads. Connects with ``connect()``
    when Ray is not initialised yet. ``batch_size`` is images per onnxruntime call, as in
    ``classify_files``; ``rows_per_call`` is images per call of an actor.
    """
    name = os.fspath(model)
    Classifier.load(name, threads=1)  # refuse a missing or bad model here, not in every actor
    blob = Path(name).read_bytes()
    connect()
    files = _files(source, recursive)
    # Reading is I/O: it asks for no CPU, or on a small cluster the actors would hold every CPU
    # while the read tasks wait for one (a deadlock seen on 2 cores).
    dataset = ray.data.read_binary_files(
        files, include_paths=True, num_cpus=0,
        file_extensions=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES) if isinstance(files, str) else None)
    actors = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, threads or 1))
    return dataset.map_batches(
        Predictor, fn_constructor_kwargs={"model": blob, "name": name, "top_k": top_k,
                                          "min_confidence": min_confidence, "batch_size": batch_size,
                                          "threads": threads, "fast_decode": fast_decode},
        batch_size=rows_per_call, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads or 1)


def write_predictions(dataset: "ray.data.Dataset", out: str | os.PathLike, *, fmt: str = "parquet") -> str:
    """Run the job and write its rows under ``out`` (a folder of ``.parquet`` or ``.csv`` files)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    out = os.fspath(out)
    if "://" not in out:
        check_new_folder(out)
    getattr(dataset, f"write_{fmt}")(out)
    return out


def collect(dataset: "ray.data.Dataset", order: Sequence[str] | None = None) -> list[FileResult]:
    """Run the job; its rows on this machine as ``FileResult``s, sorted by path.

    With ``order`` (the local paths given to ``predict_dataset``), in that order and named as
    there, so the output reads as the single-process one does.
    """
    results = {row["path"]: _file_result(row) for row in dataset.iter_rows()}
    if order is None:
        return [results[p] for p in sorted(results)]
    return [_renamed(results[_ray_path(p)], _ray_path(p), os.fspath(p)) for p in order]


def _renamed(result: FileResult, old: str, new: str) -> FileResult:
    error = result.error
    if error is not None and str(error).startswith(old):
        error = ImageError(new + str(error)[len(old):])
    return FileResult(new, result.prediction, error)


def _files(source: str | os.PathLike | Sequence[str], recursive: bool) -> str | list[str]:
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if "://" in text:
            return text  # Ray lists it
        if not Path(text).is_dir():
            return [_ray_path(text)]
        found = find_images(text, recursive=recursive)
        if not found:
            raise EdgeInferError(f"{text}: no image files")
        return [_ray_path(p) for p in found]
    return [s if "://" in s else _ray_path(s) for s in map(os.fspath, source)]


def _ray_path(path: str | os.PathLike) -> str:
    """How Ray names a local file in its ``path`` column: absolute."""
    return os.path.abspath(os.fspath(path))


def _named(blob: Any, path: str) -> io.BytesIO | bytes:
    data = bytes(blob)
    return named_bytes(data, path) if data else data  # b"": "empty file", as for a path


def _row(path: str, result: FileResult, top_k: int) -> dict[str, Any]:
    pred = result.prediction
    row: dict[str, Any] = {"path": path, "label": pred.label if pred else None,
                           "score": pred.score if pred else None, "index": pred.index if pred else None,
                           "error": _one_line(result, path)}
    values = [v for pair in (pred.top_k if pred else ())[:top_k] for v in pair]
    row.update(zip_longest(top_k_columns(top_k), values))  # a failed file: None in each
    return row


def _one_line(result: FileResult, path: str) -> str | None:
    if result.error is None:
        return None
    text = str(result.error)
    return text if text.startswith(path) else f"{path}: {text.split(': ', 1)[-1]}"


def _file_result(row: dict[str, Any]) -> FileResult:
    if row["error"] is not None:
        return FileResult(row["path"], None, ImageError(row["error"]))
    names = top_k_columns(len(row))
    top = tuple((row[label], float(row[score])) for label, score in zip(names[::2], names[1::2], strict=True)
                if row.get(label) is not None)
    return FileResult(row["path"], Prediction(row["label"], float(row["score"]), int(row["index"]), top))

"""int8: onnxruntime's static QDQ quantisation of the fp32 file, with chosen layers left in float.

* ``prepare``: ``quant_pre_process`` (shape inference + onnxruntime's graph optimisation,
  BatchNorm folded), once per export.
* ``quantize``: ``quantize_static`` in QDQ format: uint8 activations, int8 per-channel weights
  (the u8s8 kernels that onnxruntime's MLAS runs with VNNI on CPUs that have it), MinMax
  calibration. The activation ranges are computed once and kept in a calibration cache, so
  accuracy control (``export.accuracy_control``) can re-quantise with other layers in float
  in about a second instead of re-running the calibration.
* Always float: the graph's own preprocessing (every node before the first Conv), the head's
  BatchNorm1d and the final Softmax (``base_float_nodes`` says why).
* Calibration images are the run's training images, decoded and resized by ``edge_infer``'s own
  ``prepare``, so the ranges are those of what the runtime will feed.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_infer.metadata import INPUT_NAME, Preprocess
from edge_infer.preprocess import prepare as decode

__all__ = ["SETTINGS", "ArrayReader", "decode_all", "pick_calibration", "prepare", "quantize",
           "base_float_nodes", "layers", "optimized_ops"]

# What every int8 file is, recorded in its provenance (numbers behind it: export/README.md).
SETTINGS = {"format": "QDQ", "activations": "uint8 asymmetric", "weights": "int8 symmetric per-channel",
            "calibration": "MinMax"}
LAYER_OPS = ("Conv", "MatMul", "Gemm")  # what accuracy control may keep in float


class ArrayReader(CalibrationDataReader):
    """Feeds uint8 pixels [N, H, W, 3] to the calibrator in batches."""

    def __init__(self, pixels: np.ndarray, batch_size: int = 8) -> None:
        self.batches: Iterator[dict] = ({INPUT_NAME: pixels[i:i + batch_size]}
                                        for i in range(0, len(pixels), batch_size))

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def decode_all(files: list[Path], pre: Preprocess) -> np.ndarray:
    """The files as the runtime feeds them: ``edge_infer.preprocess.prepare``, full decode."""
    return np.stack([decode(f, pre, fast_decode=False) for f in files])


def pick_calibration(files: list[Path], labels: list[str], n: int) -> list[Path]:
    """Up to ``n`` files, taken round-robin over the labels so every class is represented."""
    by_label: dict[str, list[Path]] = {}
    for f, label in zip(files, labels):
        by_label.setdefault(label, []).append(f)
    queues = [iter(v) for _, v in sorted(by_label.items())]
    picked: list[Path] = []
    while queues and len(picked) < n:
        for q in list(queues):
            f = next(q, None)
            if f is None:
                queues.remove(q)
            elif len(picked) < n:
                picked.append(f)
    return picked


def prepare(fp32: Path, out: Path) -> onnx.ModelProto:
    """``quant_pre_process`` of ``fp32`` written to ``out``; returns the prepared graph."""
    quant_pre_process(str(fp32), str(out))
    return onnx.load(str(out))


def quantize(prepped: Path, out: Path, *, cache: Path, calibration: np.ndarray | None,
             keep_float: list[str]) -> None:
    """QDQ int8 of ``prepped`` to ``out``, ``keep_float`` nodes left in float.

    The first call (``cache`` absent) calibrates on ``calibration`` and writes the ranges to
    ``cache``; later calls read them back and need no images.
    """
    reader = ArrayReader(calibration) if calibration is not None and not cache.exists() else None
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime warns per excluded node; we report them
    try:
        quantize_static(
            str(prepped), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
            calibration_cache_path=str(cache),
        )
    finally:
        logging.getLogger().setLevel(level)
    model = onnx.load(str(out))
    _drop_unused_opsets(model)
    onnx.save_model(model, str(out))


def base_float_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes always left in float: the wrapper's preprocessing (before the first Conv), the
    Softmax (quantised, probabilities become multiples of 1/256), and the head's BatchNorm1d
    (onnxruntime has no int8 kernel for it: quantising its weights would only add error)."""
    first_conv = next((i for i, n in enumerate(graph.node) if n.op_type == "Conv"), 0)
    return [n.name for i, n in enumerate(graph.node)
            if i < first_conv or n.op_type in ("Softmax", "BatchNormalization")]


def layers(graph: onnx.GraphProto) -> list[str]:
    """The nodes with weights that accuracy control may keep in float, in graph order."""
    return [n.name for n in graph.node if n.op_type in LAYER_OPS]


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    # The optimiser declares every domain it knows; an older onnxruntime may not know some.
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def optimized_ops(path: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs (after its CPU optimisations)."""
    with tempfile.TemporaryDirectory(prefix="edge-infer-opt-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    return dict(sorted(ops.items(), key=lambda kv: -kv[1]))

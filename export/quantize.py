"""int8: onnxruntime's static QDQ quantisation, calibrated on training images, then gated.

* ``quant_pre_process`` (shape inference + onnxruntime's graph optimisation, BatchNorm folded)
  then ``quantize_static`` in QDQ format: uint8 activations, int8 per-channel weights (the
  u8s8 kernels that onnxruntime's MLAS runs with VNNI on CPUs that have it), MinMax calibration.
* The graph's own preprocessing (cast, /255, normalise: every node before the first Conv), the
  head's BatchNorm1d and the final Softmax stay float (``_float_nodes`` says why).
* Calibration images are the run's training images, decoded and resized by ``edge_infer``'s own
  ``prepare``, so the ranges are those of what the runtime will feed.
* The gate: fp32 vs int8 through ``edge_infer.Classifier`` on every validation file.
"""

from __future__ import annotations

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

from edge_infer import Classifier
from edge_infer.metadata import INPUT_NAME, Preprocess
from edge_infer.preprocess import prepare

from .parity import probability_matrix

__all__ = ["MIN_AGREEMENT", "MAX_ACCURACY_DROP", "ImageReader", "pick_calibration",
           "quantize", "gate", "optimized_ops"]

MIN_AGREEMENT = 0.99       # top-1 agreement with fp32 on the validation files
MAX_ACCURACY_DROP = 0.005  # 0.5 accuracy points


class ImageReader(CalibrationDataReader):
    """Feeds ``files`` to the calibrator as uint8 batches, decoded by ``edge_infer.prepare``."""

    def __init__(self, files: list[Path], pre: Preprocess, batch_size: int = 8) -> None:
        self.batches = self._batches(files, pre, batch_size)

    @staticmethod
    def _batches(files: list[Path], pre: Preprocess, size: int) -> Iterator[dict]:
        for start in range(0, len(files), size):
            yield {INPUT_NAME: np.stack([prepare(f, pre) for f in files[start:start + size]])}

    def get_next(self) -> dict | None:
        return next(self.batches, None)


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


def quantize(fp32: Path, out: Path, calibration: list[Path], pre: Preprocess) -> dict:
    """Write the QDQ int8 model of ``fp32`` to ``out``; returns what was done (JSON-ready)."""
    with tempfile.TemporaryDirectory(prefix="edge-infer-int8-") as tmp:
        prepped = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(prepped))
        graph = onnx.load(str(prepped)).graph
        keep_float = _float_nodes(graph)
        quantize_static(
            str(prepped), str(out), ImageReader(calibration, pre),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
        )
    model = onnx.load(str(out))
    _drop_unused_opsets(model)
    onnx.save_model(model, str(out))
    return {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel",
            "calibration": "MinMax", "calibration_images": len(calibration),
            "float_nodes": keep_float}


def _float_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes left in float: the wrapper's preprocessing (before the first Conv), the Softmax,
    and the head's BatchNorm1d (onnxruntime has no int8 kernel for it: quantising its weights
    would only add error, the op runs in float either way)."""
    first_conv = next((i for i, n in enumerate(graph.node) if n.op_type == "Conv"), 0)
    return [n.name for i, n in enumerate(graph.node)
            if i < first_conv or n.op_type in ("Softmax", "BatchNormalization")]


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    # The optimiser declares every domain it knows; an older onnxruntime may not know some.
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def gate(fp32: Classifier, int8: Classifier, files: list[Path], truth: list[int]) -> dict:
    """fp32 vs int8 on ``files``: agreement, accuracies, and whether the gate passes."""
    a, b = probability_matrix(fp32, files), probability_matrix(int8, files)
    y = np.asarray(truth)
    agreement = float((a.argmax(1) == b.argmax(1)).mean())
    acc32, acc8 = float((a.argmax(1) == y).mean()), float((b.argmax(1) == y).mean())
    return {
        "files": len(files), "agreement": agreement, "fp32_accuracy": acc32, "int8_accuracy": acc8,
        "accuracy_drop": acc32 - acc8, "max_prob_diff": float(np.abs(a - b).max()),
        "gate": {"min_agreement": MIN_AGREEMENT, "max_accuracy_drop": MAX_ACCURACY_DROP},
        "passed": agreement >= MIN_AGREEMENT and acc32 - acc8 <= MAX_ACCURACY_DROP + 1e-12,
    }


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

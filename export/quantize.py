"""int8: onnxruntime's static QDQ quantisation of the fp32 file, with chosen layers left in float.

* ``prepare``: ``quant_pre_process`` (shape inference + onnxruntime's graph optimisation,
  BatchNorm folded), once per export.
* ``quantize``: ``quantize_static`` in QDQ format: uint8 activations, int8 per-channel weights
  (the u8s8 kernels that onnxruntime's MLAS runs with VNNI on CPUs that have it), MinMax
  calibration.
* ``with_float_layers``: the same QDQ model with chosen layers back in float, for accuracy
  control (``export.accuracy_control``), without quantising again.
* Always float: ``ALWAYS_FLOAT`` (``base_float_nodes`` says why).
* Calibration images are the run's training images, decoded and resized by ``edge_infer``'s own
  ``prepare``, so the ranges are those of what the runtime will feed.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_infer.metadata import INPUT_NAME, Preprocess
from edge_infer.preprocess import prepare as decode

__all__ = ["SETTINGS", "ALWAYS_FLOAT", "ArrayReader", "decode_all", "pick_calibration", "prepare", "quantize",
           "with_float_layers", "base_float_nodes", "layers", "optimized_ops"]

# What every int8 file is, recorded in its provenance (numbers behind it: export/README.md).
SETTINGS = {"format": "QDQ", "activations": "uint8 asymmetric", "weights": "int8 symmetric per-channel",
            "calibration": "MinMax"}
LAYER_OPS = ("Conv", "MatMul", "Gemm")  # what accuracy control may keep in float
# What ``base_float_nodes`` leaves in float, in words (parity.json's ``int8.always_float``).
ALWAYS_FLOAT = "preprocessing before the first Conv, the classifier head from the global pooling on, Softmax"


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
    for f, label in zip(files, labels, strict=True):
        by_label.setdefault(label, []).append(f)
    rounds = itertools.zip_longest(*(by_label[label] for label in sorted(by_label)))  # one of each label a round
    return [f for r in rounds for f in r if f is not None][:n]


def prepare(fp32: Path, out: Path) -> onnx.ModelProto:
    """``quant_pre_process`` of ``fp32`` written to ``out``; returns the prepared graph."""
    quant_pre_process(str(fp32), str(out))
    return onnx.load(str(out))


def quantize(prepped: Path, out: Path, *, calibration: np.ndarray, keep_float: list[str]) -> None:
    """QDQ int8 of ``prepped`` to ``out``, calibrated on ``calibration``, ``keep_float`` nodes left
    in float (onnxruntime's ``nodes_to_exclude``)."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime warns per excluded node; we report them
    try:
        quantize_static(
            str(prepped), str(out), ArrayReader(calibration), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
        )
    finally:
        logging.getLogger().setLevel(level)
    model = onnx.load(str(out))
    _drop_unused_opsets(model)
    onnx.save_model(model, str(out))


def with_float_layers(qdq: onnx.ModelProto, prepped: onnx.ModelProto, names: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of the QDQ model in which the nodes ``names`` read float inputs again.

    Each input of such a node that came out of a ``DequantizeLinear`` is pointed back at what the
    prepared (float) model fed it: a copy of its float weight/bias, or its float activation (the
    tensor before ``QuantizeLinear``, which keeps its name). Where the quantiser folded a Relu or
    Clip into that ``QuantizeLinear``'s clipping, the activation is applied again. onnxruntime
    then runs the node in float while its neighbours stay int8; orphaned nodes are dropped.
    Seconds cheaper than quantising again, and every other tensor keeps the range the all-int8
    model was calibrated with.
    """
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    original = {n.name: n for n in prepped.graph.node}
    weights = {t.name: t for t in prepped.graph.initializer}
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in [n for n in graph.node if n.name in names]:
        for i, name in enumerate(node.input):
            if name in dequantized:
                source = original[node.name].input[i]
                node.input[i] = (_float_copy(graph, weights[source]) if source in weights
                                 else _float_activation(graph, prepped.graph, source, weights))
    _drop_orphans(graph)
    return model


def _float_copy(graph: onnx.GraphProto, tensor: onnx.TensorProto) -> str:
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    copy.name = f"{tensor.name}_float"
    if copy.name not in {t.name for t in graph.initializer}:
        graph.initializer.append(copy)
    return copy.name


def _float_activation(graph: onnx.GraphProto, prepped: onnx.GraphProto, name: str,
                      weights: dict[str, onnx.TensorProto]) -> str:
    """``name`` in float as the prepared model computes it, re-applying a folded Relu/Clip."""
    made_by = {o: (i, n) for i, n in enumerate(graph.node) for o in n.output}
    was_made_by = {o: n for n in prepped.node for o in n.output}
    index, now = made_by.get(name, (-1, None))
    before = was_made_by.get(name)
    if now is None or before is None or before.op_type == now.op_type or before.op_type not in ("Relu", "Clip"):
        return name  # a graph input, or the same producer as in the float model
    if f"{name}_float" not in made_by:
        again = onnx.NodeProto()
        again.CopyFrom(before)
        again.name, again.input[0] = f"{before.name}_float", name
        again.output[:] = [f"{name}_float"]
        for extra in again.input[1:]:  # Clip's min/max
            if extra:
                _float_copy(graph, weights[extra])
        again.input[1:] = [f"{e}_float" if e else e for e in again.input[1:]]
        graph.node.insert(index + 1, again)
    return f"{name}_float"


def _drop_orphans(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nobody reads, then initializers nobody reads."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(t)


def base_float_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes always left in float, each for a measured reason (export/README.md, int8):

    * the wrapper's preprocessing, every node before the first Conv (not quantised by default
      anyway; stated, not left to onnxruntime's defaults);
    * the classifier head, every node from the global pooling on (fastai's pooling, BatchNorm1d,
      Linear layers): under 1 % of the work, but quantised it rounds the logits to 256 levels
      (near-ties become exact ties, which ``argmax`` settles by label order). In float it cut the
      logit error by a third on a 64 px Fashion-MNIST model at no measured latency cost;
    * the Softmax (quantised, probabilities become multiples of 1/256) and any BatchNormalization
      (no int8 kernel: quantising its weights only adds error), wherever they are.
    """
    nodes = list(graph.node)
    first_conv = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), 0)
    head = _head_start(nodes)
    return [n.name for i, n in enumerate(nodes)
            if i < first_conv or i >= head or n.op_type in ("Softmax", "BatchNormalization")]


def _head_start(nodes: list[onnx.NodeProto]) -> int:
    """Index of the first node after the body: the body ends where the first global pooling
    reads its features (every body node comes before that producer in topological order).
    ``len(nodes)`` for a graph without global pooling."""
    pool = next((n for n in nodes if n.op_type in ("GlobalAveragePool", "GlobalMaxPool")), None)
    if pool is None:
        return len(nodes)
    producer = next((i for i, n in enumerate(nodes) if pool.input[0] in n.output), -1)
    return producer + 1


def layers(graph: onnx.GraphProto) -> list[str]:
    """The int8 nodes with weights that accuracy control may keep in float, in graph order."""
    always = set(base_float_nodes(graph))
    return [n.name for n in graph.node if n.op_type in LAYER_OPS and n.name not in always]


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
        # A session opened only to make onnxruntime write its optimised graph (not the runtime's opener)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    return dict(ops.most_common())

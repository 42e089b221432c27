"""Tiny, explainable ONNX models built with onnx.helper: no torch needed.

``colour_model``: the mean of each RGB channel, times ``gain``, softmax over
("red", "green", "blue"). A red image is "red" with near certainty, so a prediction is a true
end-to-end check of decode -> resize -> graph -> labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge_infer.metadata import METADATA_KEY, ModelInfo, Preprocess

COLOURS = ("red", "green", "blue")


def colour_graph(size: tuple[int, int] = (32, 32), *, gain: float = 0.05,
                 input_name: str = "image", output_name: str = "probabilities",
                 n_out: int = 3, input_type: int = TensorProto.UINT8) -> onnx.ModelProto:
    h, w = size
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "gain"], ["logits"]),
    ]
    if n_out != 3:  # a deliberately inconsistent graph, for signature tests
        nodes.append(helper.make_node("Slice", ["logits", "starts", "ends", "sl_axes"], ["logits2"]))
        last = "logits2"
    else:
        last = "logits"
    nodes.append(helper.make_node("Softmax", [last], [output_name], axis=1))
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("gain", TensorProto.FLOAT, [], [gain]),
    ]
    if n_out != 3:
        inits += [
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [n_out]),
            helper.make_tensor("sl_axes", TensorProto.INT64, [1], [1]),
        ]
    graph = helper.make_graph(
        nodes, "colour",
        [helper.make_tensor_value_info(input_name, input_type, ["N", h, w, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", n_out])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def colour_info(size: tuple[int, int] = (32, 32), **pre) -> ModelInfo:
    return ModelInfo(labels=COLOURS, preprocess=Preprocess(size=size, **pre),
                     provenance={"arch": "channel-mean", "made_by": "tests/tiny_models.py"})


def save(model: onnx.ModelProto, path: Path, info: ModelInfo | None = None,
         raw_metadata: str | None = None) -> Path:
    """Write ``model`` with ``info`` (or a raw string) as its edge_infer metadata."""
    del model.metadata_props[:]
    text = raw_metadata if raw_metadata is not None else (info.to_json() if info else None)
    if text is not None:
        model.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_KEY, value=text))
    onnx.save(model, str(path))
    return path


def colour_model_file(path: Path, size: tuple[int, int] = (32, 32), **pre) -> Path:
    return save(colour_graph(size), path, colour_info(size, **pre))


def solid(colour: str, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """An HxWx3 uint8 image of one pure colour."""
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[..., COLOURS.index(colour)] = 255
    return a


def centroid_model_file(path: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                        *, scale: float = 1e-4) -> Path:
    """Nearest class mean, as an edge_infer model: a real (if weak) classifier without torch.

    ``images`` uint8 [N, H, W] grayscale, ``labels`` int [N] indexing ``names``. The graph
    averages the three RGB channels, then scores ``x.mu_c - |mu_c|^2 / 2`` (the nearest mean
    in Euclidean distance has the highest score), times ``scale``, softmax. On Fashion-MNIST it
    gets about 0.68 of the test images right.
    """
    h, w = images.shape[1:3]
    means = np.stack([images[labels == c].reshape(-1, h * w).mean(axis=0) for c in range(len(names))])
    weights = (means.T * scale).astype(np.float32)                     # [H*W, C]
    bias = (-(means ** 2).sum(axis=1) / 2 * scale).astype(np.float32)  # [C]
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "channel"], ["gray"], keepdims=0),
        helper.make_node("Reshape", ["gray", "flat"], ["row"]),
        helper.make_node("MatMul", ["row", "weights"], ["dot"]),
        helper.make_node("Add", ["dot", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    inits = [
        helper.make_tensor("channel", TensorProto.INT64, [1], [3]),
        helper.make_tensor("flat", TensorProto.INT64, [2], [-1, h * w]),
        helper.make_tensor("weights", TensorProto.FLOAT, list(weights.shape), weights.ravel()),
        helper.make_tensor("bias", TensorProto.FLOAT, [len(names)], bias),
    ]
    graph = helper.make_graph(
        nodes, "centroids",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(names)])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    info = ModelInfo(labels=tuple(names), preprocess=Preprocess(size=(int(h), int(w)), resize="squish"),
                     provenance={"arch": "nearest-class-mean", "made_by": "tests/tiny_models.py"})
    return save(model, path, info)


def add_canaries(path: Path, pixels: np.ndarray, *, fp32: Path | None = None) -> Path:
    """Store canaries in the edge_infer file ``path`` as export does (``export.canaries.select``),
    from candidate inputs ``pixels``; ``fp32``: the file is the int8 twin of that fp32 file."""
    from edge_infer import Classifier
    from edge_infer.canaries import CANARIES_KEY
    from export.canaries import select

    clf = Classifier.load(path)
    own = clf.probabilities(pixels)
    reference = Classifier.load(fp32).probabilities(pixels) if fp32 is not None else own
    canaries = select(pixels, reference, own if fp32 is not None else None, model_bytes=path.stat().st_size)
    model = onnx.load(str(path))
    save(model, path, clf.info.replace(canaries=canaries.summary()))
    model.metadata_props.append(onnx.StringStringEntryProto(key=CANARIES_KEY, value=canaries.to_json()))
    onnx.save(model, str(path))
    return path

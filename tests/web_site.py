"""What the ``edge-infer web`` tests and ``benchmarks/web.py`` share: onnxruntime-web from npm, a
static file server on 127.0.0.1, a small random CNN as an edge_infer model (fp32 and int8), and
the calls into the page's ``window.edgeInfer`` hook.

onnxruntime-web is installed into ``.ortweb/`` (git-ignored) by ``.ci/run`` with the command in
``ORT_INSTALL``; the tests skip locally without it and fail in CI. The server, chromium's flags and
the paths are ``benchmarks.web``'s, which times the page with them.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.web import CHROMIUM_ARGS, ORT_DIST, ORT_INSTALL, serving  # noqa: F401 (used by the tests)


def cnn_model(path: Path, *, size: tuple[int, int], labels: tuple[str, ...] = ("ant", "bee", "cat", "dog"),
              seed: int = 0, **pre: Any) -> Path:
    """uint8 NHWC -> /255, ImageNet normalisation -> two 3x3 convs -> pooling -> linear -> softmax,
    random weights: a model whose every pixel matters, without torch."""
    import onnx
    import tiny_models
    from onnx import TensorProto, helper, numpy_helper

    from edge_infer.metadata import ModelInfo, Preprocess

    rng = np.random.default_rng(seed)
    h, w = size
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1) * 255
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1) * 255
    inits = {
        "mean": mean, "std": std,
        "w1": rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "b1": np.zeros(8, np.float32),
        "w2": rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32), "b2": np.zeros(16, np.float32),
        "fc": rng.normal(0, 1.0, (16, len(labels))).astype(np.float32),
        "fb": np.zeros(len(labels), np.float32),
    }
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2], name="nchw"),
        helper.make_node("Sub", ["nchw", "mean"], ["centred"], name="sub"),
        helper.make_node("Div", ["centred", "std"], ["x"], name="div"),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fb"], ["logits"], name="bias"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
    ]
    def build(outputs: list) -> onnx.ModelProto:
        graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
                                  outputs, initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model

    # Centre and scale the head on smooth random images, so that the answer depends on the image,
    # not on a bias that every image shares (pooled ReLU features are all positive).
    import onnxruntime as ort
    probe = ort.InferenceSession(build([helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 16])])
                                 .SerializeToString(), providers=["CPUExecutionProvider"])
    blobs = np.stack([np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
                                 .resize((w, h), Image.Resampling.BILINEAR)) for _ in range(32)])
    features = probe.run(None, {"image": blobs})[0]
    logits = (features - features.mean(0)) @ inits["fc"]
    inits["fc"] = inits["fc"] * (2.0 / logits.std())
    inits["fb"] = -(features.mean(0) @ inits["fc"]).astype(np.float32)
    model = build([helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(labels)])])
    onnx.checker.check_model(model, full_check=True)
    info = ModelInfo(labels=labels, preprocess=Preprocess(size=size, **pre),
                     provenance={"arch": "random-cnn", "made_by": "tests/web_site.py"})
    return tiny_models.save(model, path, info)


def int8_model(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """The project's own int8 path (export.quantize: QDQ, per-channel, float head) on ``fp32``."""
    import onnx
    import tiny_models

    from edge_infer import Classifier
    from export.quantize import base_float_nodes, prepare, quantize

    prepped = out.with_suffix(".prepped.onnx")
    graph = prepare(fp32, prepped)
    quantize(prepped, out, calibration=calibration, keep_float=base_float_nodes(graph.graph))
    info = Classifier.load(fp32, threads=1).info.replace(precision="int8")
    return tiny_models.save(onnx.load(str(out)), out, info)


# In-page helpers: bytes cross the playwright boundary as base64.
JS_PREPROCESS = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const t = await window.edgeInfer.preprocess(new Blob([bytes]));
  let s = ""; for (let i = 0; i < t.length; i += 8192) s += String.fromCharCode(...t.subarray(i, i + 8192));
  return btoa(s);
}"""
JS_CLASSIFY = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const answer = await window.edgeInfer.classify(new Blob([bytes]));
  return Array.from(answer.probabilities);
}"""


def open_site(page: Any, url: str) -> None:
    page.goto(url)
    page.evaluate("window.edgeInfer.ready.then(() => true)")


def page_tensor(page: Any, path: Path) -> np.ndarray:
    data = base64.b64encode(path.read_bytes()).decode()
    return np.frombuffer(base64.b64decode(page.evaluate(JS_PREPROCESS, data)), np.uint8)


def page_probabilities(page: Any, path: Path) -> np.ndarray:
    return np.array(page.evaluate(JS_CLASSIFY, base64.b64encode(path.read_bytes()).decode()), np.float32)

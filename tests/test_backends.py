"""Backends and providers: onnxruntime and OpenVINO on the same real ``.onnx`` files.

The OpenVINO tests need the ``openvino`` extra (in ``dev``, so CI has it); they run real
compiled models, and compare them with onnxruntime on real photos that the installed packages
ship (scikit-learn's, matplotlib's, scikit-image's): a confident prediction (onnxruntime's
top-2 margin >= ``edge_infer.agreement.CONFIDENT_MARGIN``) that changes is a bug, not a tolerance.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_models
from click.testing import CliRunner
from onnx import TensorProto, helper

from benchmarks.images import real_photos
from edge_infer import Classifier, backends
from edge_infer.agreement import compare as agreement
from edge_infer.backends import OnnxRuntimeBackend, open_onnxruntime
from edge_infer.cli import cli
from edge_infer.errors import EdgeInferError


def needs_openvino() -> None:
    pytest.importorskip("openvino", reason="the openvino extra: pip install 'edge-infer[openvino]'")


# --------------------------------------------------------------------------- a small real conv net


def conv_model_file(path: Path, size: int = 64, classes: int = 6, seed: int = 0) -> Path:
    """uint8 NHWC -> /255 -> two strided 3x3 convs + ReLU -> global pool -> linear -> softmax,
    random weights: a real convolution network small enough to compile in a second."""
    rng = np.random.default_rng(seed)

    def weights(name: str, *shape: int, scale: float) -> onnx.TensorProto:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return helper.make_tensor(name, TensorProto.FLOAT, shape, data.ravel().tolist())

    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["nchw", "k255"], ["x"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    inits = [helper.make_tensor("k255", TensorProto.FLOAT, [], [255.0]),
             weights("w1", 16, 3, 3, 3, scale=0.5), weights("b1", 16, scale=0.1),
             weights("w2", 32, 16, 3, 3, scale=0.2), weights("b2", 32, scale=0.1),
             weights("w3", classes, 32, scale=3.0), weights("b3", classes, scale=0.1)]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    info = tiny_models.ModelInfo(labels=tuple(f"class{i}" for i in range(classes)),
                                 preprocess=tiny_models.Preprocess(size=(size, size)),
                                 provenance={"arch": "two-conv", "made_by": "tests/test_backends.py"})
    return tiny_models.save(model, path, info)


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory) -> Path:
    return conv_model_file(tmp_path_factory.mktemp("conv") / "conv.onnx")


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    found = real_photos()
    assert len(found) >= 2, "scikit-learn (dev group) ships china.jpg and flower.jpg"
    return found


# ---------------------------------------------------------------------------------- onnxruntime


def test_onnxruntime_is_the_default_backend(colour_model: Path, colour_images) -> None:
    clf = Classifier.load(colour_model)
    assert clf.backend.name == "onnxruntime" and clf.session is not None
    assert "onnxruntime" in repr(clf)
    assert clf.predict(colour_images["red"]).label == "red"


@pytest.mark.parametrize("provider", ["cuda", "TensorrtExecutionProvider"])
def test_an_unavailable_provider_names_what_is_available(colour_model: Path, provider: str) -> None:
    with pytest.raises(EdgeInferError, match=r"provider \w+ is not available\. Available: \[.*'CPUExecutionProvider'"):
        Classifier.load(colour_model, providers=[provider])


def test_the_cpu_provider_by_short_name(colour_model: Path, colour_images) -> None:
    clf = Classifier.load(colour_model, providers=["cpu"])
    assert clf.session.get_providers() == ["CPUExecutionProvider"]
    assert clf.predict(colour_images["blue"]).label == "blue"


def test_cli_provider_error_is_one_line(colour_model: Path, colour_images) -> None:
    result = CliRunner().invoke(cli, ["predict", str(colour_model), str(colour_images["red"]),
                                      "--provider", "cuda"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: provider CUDAExecutionProvider is not available. Available:")


# ------------------------------------------------------------------------------------- OpenVINO


def test_openvino_runs_the_same_file(colour_model: Path, colour_images) -> None:
    needs_openvino()
    ov = Classifier.load(colour_model, backend="openvino", threads=1)
    ort_clf = Classifier.load(colour_model, threads=1)
    assert ov.backend.name == "openvino" and ov.session is None
    assert "OpenVINO" in repr(ov) and "f32" in repr(ov)
    for colour, path in colour_images.items():
        assert ov.predict(path).label == colour
    pixels = np.stack([ort_clf.preprocess(p) for p in colour_images.values()])
    np.testing.assert_allclose(ov.probabilities(pixels), ort_clf.probabilities(pixels), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_agrees_on_every_confident_prediction_over_real_photos(conv_model: Path, photos, precision) -> None:
    """A real conv net, real photos; bf16 (opt-in) must not flip a confident answer either."""
    needs_openvino()
    reference = Classifier.load(conv_model, threads=1)
    ov = Classifier.load(conv_model, backend="openvino", threads=1, inference_precision=precision)
    pixels = np.stack([reference.preprocess(p) for p in photos])
    a = agreement(reference.probabilities(pixels), ov.probabilities(pixels))
    assert a.confident >= 2, f"the test net should be confident on some photos: {a}"
    assert a.confident_same == a.confident, a
    if precision == "f32":
        assert a.max_abs_prob_diff < 1e-3, a


def test_auto_picks_a_backend_that_gives_the_same_answer(colour_model: Path, colour_images, tmp_path: Path) -> None:
    """Both backends reproduce this file's canaries: auto settles on one of them and answers alike,
    before and after it settles."""
    needs_openvino()
    path = tmp_path / "colours.onnx"
    path.write_bytes(colour_model.read_bytes())
    tiny_models.add_canaries(path, np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    clf = Classifier.load(path, backend="auto", threads=1)
    assert clf.predict(colour_images["green"]).label == "green"
    assert clf.settle().startswith(f"auto: {clf.backend.name} (reproduces the ")
    assert "batch-1 median on them: onnxruntime " in clf.chosen and ", openvino " in clf.chosen
    assert clf.predict(colour_images["green"]).label == "green"


def int8_copy(fp32: Path, out: Path) -> Path:
    """``fp32`` quantised by export's own quantiser (``export.quantize``) with int8 metadata."""
    from export.quantize import base_float_nodes, quantize

    pixels = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    quantize(fp32, out, calibration=pixels, keep_float=base_float_nodes(onnx.load(str(fp32)).graph))
    info = Classifier.load(fp32).info.replace(precision="int8")
    return tiny_models.save(onnx.load(str(out)), out, info)


def test_auto_keeps_a_file_without_canaries_on_onnxruntime(conv_model: Path, tmp_path: Path) -> None:
    """Nothing in a file without canaries can show that OpenVINO computes what export checked
    (onnxruntime's answers), so auto does not switch, fp32 or int8; OpenVINO runs it when named."""
    needs_openvino()
    int8 = int8_copy(conv_model, tmp_path / "conv.int8.onnx")
    for path in (conv_model, int8):
        clf = Classifier.load(path, backend="auto")
        assert clf.backend.name == "onnxruntime" and clf.settle() == clf.chosen
        assert "has no canaries" in clf.chosen
    assert Classifier.load(int8, backend="openvino").backend.name == "openvino"


def test_providers_are_refused_with_another_backend(colour_model: Path) -> None:
    with pytest.raises(EdgeInferError, match="providers are onnxruntime's"):
        Classifier.load(colour_model, backend="openvino", providers=["cpu"])


def test_cli_predict_and_bench_take_a_backend(colour_model: Path, colour_images, tmp_path: Path) -> None:
    needs_openvino()
    result = CliRunner().invoke(cli, ["predict", str(colour_model), str(colour_images["red"]),
                                      "--backend", "openvino"])
    assert result.exit_code == 0, result.output
    assert result.output.split("\t")[1] == "red"
    folder = tmp_path / "imgs"
    folder.mkdir()
    for path in colour_images.values():
        (folder / path.name).write_bytes(path.read_bytes())
    result = CliRunner().invoke(cli, ["bench", str(colour_model), "--images", str(folder), "--runs", "2",
                                      "--warmup", "0", "--backend", "openvino", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "OpenVINO" in result.output
    assert "agreement with onnxruntime over 3 images: top-1 3/3; confident (margin >= 0.2) 3/3" in result.output


def test_a_missing_openvino_is_one_clear_error(colour_model: Path, monkeypatch) -> None:
    """Without the extra (simulated by hiding the module), the error says how to install it."""
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(EdgeInferError, match=r"pip install 'edge-infer\[openvino\]'"):
        Classifier.load(colour_model, backend="openvino")


def test_openvino_serves_calls_from_many_threads(conv_model: Path, photos) -> None:
    """A server calls one Classifier from several threads; every answer must be its own image's."""
    from concurrent.futures import ThreadPoolExecutor

    needs_openvino()
    ov = Classifier.load(conv_model, backend="openvino", threads=1)
    pixels = [ov.preprocess(p)[None] for p in photos]
    expected = [ov.probabilities(p) for p in pixels]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(ov.probabilities, pixels * 3))
    for i, probs in enumerate(got):
        np.testing.assert_array_equal(probs, expected[i % len(pixels)])

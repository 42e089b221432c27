"""int8 accuracy control and the gate's statistics, on models built here with onnx.helper.

``sensitive_model``: a colour classifier (mean of each channel -> softmax) of four 1x1 convs in
which exactly one, ``sensitive``, cannot survive int8. Its useful weights are 1.0, but it also
has a weight of 1000 on an input channel that the stem always makes 0 (``Relu(0 * x - 1)``):
harmless in float, yet per-channel symmetric int8 then has a step of 1000/127 ~ 7.9 for that
output channel and rounds every useful weight to 0. Every other layer quantises cleanly, so the
search must keep exactly ``sensitive`` in float. The predictions are confident (channel means
differ by ~100 grey levels, the logits by ~8), so the outcome does not hang on float rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.accuracy_control import probabilities, search
from export.defaults import MAX_FLOAT_LAYERS
from export.int8_gate import NEAR_TIE, compare

SIZE = 8


def _conv(name: str, x: str, y: str, w: np.ndarray, b: np.ndarray) -> tuple[onnx.NodeProto, list]:
    inits = [numpy_helper.from_array(w.astype(np.float32)[:, :, None, None], f"{name}.w"),
             numpy_helper.from_array(b.astype(np.float32), f"{name}.b")]
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name), inits


def sensitive_model(path) -> None:
    stem_w = np.zeros((4, 3))
    stem_w[:3, :3] = np.eye(3)
    sensitive_w = np.zeros((3, 4))
    sensitive_w[:, :3] = np.eye(3)
    sensitive_w[:, 3] = 1000.0
    convs = [
        _conv("stem", "x", "a", stem_w, np.array([0, 0, 0, -1.0])),
        _conv("sensitive", "a_relu", "b", sensitive_w, np.zeros(3)),
        _conv("mixer", "b_relu", "c", np.eye(3) * 2 + 0.1, np.zeros(3)),
    ]
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2], name="nchw"),
             helper.make_node("Mul", ["nchw", "scale"], ["x"], name="scale"),
             convs[0][0], helper.make_node("Relu", ["a"], ["a_relu"], name="relu_a"),
             convs[1][0], helper.make_node("Relu", ["b"], ["b_relu"], name="relu_b"),
             convs[2][0],
             helper.make_node("GlobalAveragePool", ["c"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flat"),
             helper.make_node("MatMul", ["flat", "head.w"], ["logits"], name="head"),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax")]
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
             numpy_helper.from_array((np.eye(3) * 5).astype(np.float32), "head.w")]
    inits += [t for _, ts in convs for t in ts]
    graph = helper.make_graph(nodes, "sensitive",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy images, each with one channel ~100 grey levels above the others."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    pixels = rng.integers(20, 110, (n, SIZE, SIZE, 3))
    pixels[np.arange(n), :, :, labels] += 120
    return pixels.astype(np.uint8), labels


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    sensitive_model(folder / "fp32.onnx")
    calibration, _ = colour_images(30, seed=0)
    valid, truth = colour_images(60, seed=1)
    lines: list[str] = []
    outcome = search(folder / "fp32.onnx", folder, calibration=calibration, valid=valid, truth=truth,
                     names=[f"v{i}.png" for i in range(len(valid))], echo=lines.append)
    return folder, valid, truth, outcome, lines


def test_fp32_model_is_right_and_confident(searched):
    folder, valid, truth, _, _ = searched
    probs = probabilities(folder / "fp32.onnx", valid)
    assert (probs.argmax(1) == truth).all() and probs.max(1).min() > 0.9


def test_all_int8_fails_with_confident_flips(searched):
    *_, outcome, _ = searched
    first = outcome.tried[0]
    assert first.float_layers == () and not first.result.passed
    assert first.result.agreement.confident_flips >= 30  # two classes of three collapse onto one


def test_search_keeps_exactly_the_sensitive_layer_in_float(searched):
    *_, outcome, lines = searched
    assert outcome.sensitivity[0]["layer"] == "sensitive"
    assert outcome.chosen is not None and outcome.chosen.float_layers == ("sensitive",)
    r = outcome.chosen.result
    assert r.passed and r.agreement.top1_agreement == 1.0 and r.agreement.confident_flips == 0
    assert len(outcome.tried) == 2  # stopped at the first candidate that reached the target
    assert any("1 layer(s) in float ['sensitive']" in line and "passed" in line for line in lines)
    assert outcome.latency is not None and outcome.latency["ratio"] > 0
    report = outcome.report()
    assert report["budget"] == MAX_FLOAT_LAYERS and report["tried"][1]["float_layers"] == ["sensitive"]


def test_chosen_model_runs_the_other_layers_in_int8(searched, tmp_path):
    folder, valid, _, outcome, _ = searched
    model = outcome.chosen.model
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    inputs = {n.name: list(n.input) for n in model.graph.node if n.op_type in ("Conv", "MatMul")}
    assert inputs["sensitive"][0] == "a_relu_float" and inputs["sensitive"][1] == "sensitive.w_float"  # float, Relu re-applied
    assert all(inputs[name][1] in dequantized for name in ("stem", "mixer"))
    assert inputs["head"] == ["flat", "head.w"]  # the classifier head is always float
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "chosen.onnx"))  # what export writes, run from the file
    fp32 = probabilities(folder / "fp32.onnx", valid)
    assert (probabilities(tmp_path / "chosen.onnx", valid).argmax(1) == fp32.argmax(1)).all()


# ------------------------------------------------------------------------------ gate statistics


def _probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32)


def test_gate_allows_near_tie_flips_and_refuses_a_confident_one():
    fp32 = _probs([[0.5, 0.45, 0.05], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    near = _probs([[0.46, 0.49, 0.05], [0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    names = ["a", "b", "c", "d"]
    truth = np.array([1, 0, 1, 2])  # the near-tie flip happens to be right: accuracy goes up
    r = compare(fp32, near, truth, names)
    a = r.agreement
    assert r.passed and a.near_tie_flips == 1 and a.confident_flips == 0 and a.top1_agreement == 0.75
    assert r.to_dict()["flipped"] == [{"file": "a", "fp32_margin": pytest.approx(0.05, abs=1e-4)}]
    assert 0.05 < NEAR_TIE < 0.8  # the rows above sit far from the margin on either side
    confident = near.copy()
    confident[1] = [0.3, 0.6, 0.1]
    r = compare(fp32, confident, np.array([1, 1, 1, 2]), names)  # this flip is even right
    assert not r.passed and r.agreement.confident_flips == 1 and r.accuracy_drop < 0


def test_gate_refuses_lost_accuracy_even_from_near_ties():
    fp32 = _probs([[0.5, 0.45, 0.05]] * 10)
    int8 = fp32.copy()
    int8[0] = [0.45, 0.5, 0.05]
    r = compare(fp32, int8, np.zeros(10, int), [str(i) for i in range(10)])
    assert r.agreement.confident_flips == 0 and r.accuracy_drop == pytest.approx(0.1) and not r.passed


def test_the_gate_reports_the_first_20_of_many_flips() -> None:
    """parity.json lists the first 20 flipped files with their margins, however many flipped."""
    fp32 = np.tile([[0.9, 0.1]], (30, 1))
    gate = compare(fp32, fp32[:, ::-1], np.zeros(30, dtype=int), [f"{i}.png" for i in range(30)])
    d = gate.to_dict()
    assert d["flips"] == 30 and d["confident_flips"] == 30 and not d["passed"]
    assert [f["file"] for f in d["flipped"]] == [f"{i}.png" for i in range(20)]

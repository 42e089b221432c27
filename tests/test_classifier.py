"""Classifier: what it refuses to load, and predictions from every kind of input, without torch.

The colour model (tests/tiny_models.py) averages each channel, so a solid red image is "red"
with a probability near 1 and a grey one gives 1/3 to every label.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from onnx import TensorProto
from PIL import Image

from edge_infer import Classifier, EdgeInferError, ImageError, ModelFormatError, Prediction
from edge_infer.classifier import UNKNOWN_LABEL


@pytest.fixture(scope="module")
def clf(colour_model) -> Classifier:
    return Classifier.load(colour_model, threads=1)


def _bad_model(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.onnx"
    info = tiny_models.colour_info()
    if case == "not onnx":
        path.write_text("these are not the weights you are looking for\n")
    elif case == "no metadata":
        tiny_models.save(tiny_models.colour_graph(), path)
    elif case == "float input":
        tiny_models.save(tiny_models.colour_graph(input_type=TensorProto.FLOAT), path, info)
    elif case == "wrong size":
        tiny_models.save(tiny_models.colour_graph((32, 32)), path, tiny_models.colour_info((64, 48)))
    elif case == "two outputs, three labels":
        tiny_models.save(tiny_models.colour_graph(n_out=2), path, info)
    elif case == "input named pixels":
        tiny_models.save(tiny_models.colour_graph(input_name="pixels"), path, info)
    elif case == "output named scores":
        tiny_models.save(tiny_models.colour_graph(output_name="scores"), path, info)
    elif case == "bad metadata":
        tiny_models.save(tiny_models.colour_graph(), path, raw_metadata='{"schema": 1, "labels"')
    return path


LOAD_REFUSALS = {
    "missing file": "no such model file",
    "a folder": "no such model file",
    "not onnx": "not a valid ONNX model",
    "no metadata": "has no edge_infer metadata; export it with python -m export, or inspect it with edge-infer info",
    "float input": "input 'image' is tensor(float) ['N', 32, 32, 3], metadata says uint8 [N, 32, 32, 3]; re-export",
    "wrong size": "metadata says uint8 [N, 64, 48, 3]; re-export it with python -m export",
    "two outputs, three labels": "but the metadata lists 3 labels; re-export it with python -m export",
    "input named pixels": "graph inputs are ['pixels'], expected ['image']; re-export",
    "output named scores": "graph has no 'probabilities' output (outputs: ['scores']); re-export",
    "bad metadata": "edge_infer metadata is not valid JSON",
}


@pytest.mark.parametrize("case", sorted(LOAD_REFUSALS))
def test_load_refuses_with_the_file_and_the_fix(tmp_path, case: str) -> None:
    if case == "missing file":
        path = tmp_path / "absent.onnx"
    elif case == "a folder":
        path = tmp_path
    else:
        path = _bad_model(tmp_path, case)
    with pytest.raises(ModelFormatError) as err:
        Classifier.load(path)
    message = str(err.value)
    assert message.startswith(str(path)) and LOAD_REFUSALS[case] in message
    assert "\n" not in message


def test_an_unavailable_provider_lists_the_available_ones(colour_model) -> None:
    with pytest.raises(EdgeInferError, match=r"provider NoSuchExecutionProvider is not available\. "
                                              r"Available: \[.*'CPUExecutionProvider'"):
        Classifier.load(colour_model, providers=["NoSuchExecutionProvider"])


def test_repr_and_labels(clf) -> None:
    assert clf.labels == ("red", "green", "blue")
    assert repr(clf).endswith("labels=3, size=32x32, precision=fp32)")


def _as_source(kind: str, path: Path):
    if kind == "path":
        return path
    if kind == "str":
        return str(path)
    if kind == "bytes":
        return path.read_bytes()
    if kind == "file object":
        return io.BytesIO(path.read_bytes())
    if kind == "PIL image":
        return Image.open(path)
    return np.asarray(Image.open(path).convert("RGB"))  # "array"


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "file object", "PIL image", "array"])
@pytest.mark.parametrize("colour", tiny_models.COLOURS)
def test_predict_from_every_kind_of_source(clf, colour_images, kind: str, colour: str) -> None:
    pred = clf.predict(_as_source(kind, colour_images[colour]))
    assert (pred.label, pred.index) == (colour, tiny_models.COLOURS.index(colour))
    assert pred.score > 0.99 and pred.top_k == ((colour, pred.score),)


def test_predict_reads_an_open_file(clf, colour_images) -> None:
    with open(colour_images["blue"], "rb") as f:
        assert clf.predict(f).label == "blue"


def test_predict_batch_keeps_the_input_order(clf, colour_images) -> None:
    order = ["green", "red", "red", "blue", "green", "blue", "red", "green", "blue", "blue", "red"]
    preds = clf.predict_batch([colour_images[c] for c in order], batch_size=3)
    assert [p.label for p in preds] == order


def test_predict_batch_raises_the_first_bad_image(clf, colour_images, tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("no pixels here")
    with pytest.raises(ImageError, match=f"^{bad}: not an image"):
        clf.predict_batch([colour_images["red"], bad, colour_images["blue"]])


def test_classify_files_reports_bad_files_and_goes_on(clf, colour_images, tmp_path) -> None:
    missing = tmp_path / "gone.png"
    results = list(clf.classify_files([colour_images["red"], missing, colour_images["green"]], batch_size=2))
    assert [r.source for r in results] == [str(colour_images["red"]), str(missing), str(colour_images["green"])]
    assert [r.prediction.label if r.prediction else None for r in results] == ["red", None, "green"]
    assert isinstance(results[1].error, ImageError) and str(results[1].error) == f"{missing}: no such file"


def test_predict_array_takes_pixels_at_the_model_size(clf) -> None:
    batch = np.stack([tiny_models.solid(c, (32, 32)) for c in ("blue", "red", "green")])
    assert [p.label for p in clf.predict_array(batch)] == ["blue", "red", "green"]


@pytest.mark.parametrize("bad", [
    np.zeros((1, 32, 32, 3), np.float32),  # not uint8
    np.zeros((32, 32, 3), np.uint8),       # no batch axis
    np.zeros((1, 31, 32, 3), np.uint8),    # wrong height
    np.zeros((1, 32, 32, 4), np.uint8),    # RGBA
])
def test_predict_array_refuses_other_shapes(clf, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"takes uint8 \[N, 32, 32, 3\] RGB pixels, got"):
        clf.predict_array(bad)


def test_top_k_is_sorted_and_sums_to_one(clf) -> None:
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 200, 120, 40  # red > green > blue
    pred = clf.predict(pixels, top_k=3)
    assert [label for label, _ in pred.top_k] == ["red", "green", "blue"]
    scores = [p for _, p in pred.top_k]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-6)


def test_top_k_larger_than_the_label_count_gives_every_label(clf, colour_images) -> None:
    assert len(clf.predict(colour_images["red"], top_k=10).top_k) == 3


def test_top_k_below_one_is_refused(clf, colour_images) -> None:
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        clf.predict(colour_images["red"], top_k=0)


@pytest.mark.parametrize("threshold, label", [(None, "red"), (0.0, "red"), (0.45, "red"), (0.5, UNKNOWN_LABEL), (1.0, UNKNOWN_LABEL)])
def test_min_confidence_gives_unknown_below_the_threshold(clf, threshold, label) -> None:
    """Slightly red grey: the model is unsure (softmax of 0.05 * (140, 128, 128): 0.477 for red)."""
    pixels = np.full((32, 32, 3), 128, np.uint8)
    pixels[..., 0] = 140
    pred = clf.predict(pixels, top_k=2, min_confidence=threshold)
    assert pred.score == pytest.approx(0.477, abs=1e-3)
    assert pred.label == label and pred.index == (-1 if label == UNKNOWN_LABEL else 0)
    assert pred.top_k[0][0] == "red"  # what the model thought is still there


def test_prediction_to_dict() -> None:
    pred = Prediction("red", 0.75, 0, (("red", 0.75), ("blue", 0.25)))
    assert pred.to_dict() == {"label": "red", "score": 0.75, "index": 0,
                              "top_k": [["red", 0.75], ["blue", 0.25]]}


def test_max_pixels_is_applied_by_the_classifier(colour_model, colour_images) -> None:
    small = Classifier.load(colour_model, max_pixels=100)
    with pytest.raises(ImageError, match="40x30 is 1,200 pixels, over the limit of 100"):
        small.predict(colour_images["red"])

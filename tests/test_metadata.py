"""The model contract (edge_infer.metadata): round trips, and a clear refusal for every bad block."""

from __future__ import annotations

import json

import pytest
import tiny_models

from edge_infer import Classifier, ModelFormatError
from edge_infer.metadata import INPUT_SPEC, OUTPUT_SPEC, SCHEMA_VERSION, ModelInfo, Preprocess

INFOS = {
    "defaults": ModelInfo(labels=("cat", "dog", "fox"), preprocess=Preprocess(size=(224, 224))),
    "pad-int8-parity": ModelInfo(
        labels=("a", "b", "c"),
        preprocess=Preprocess(size=(160, 96), resize="pad", pad_mode="zeros", exif_transpose=False,
                              background=(0, 0, 0)),
        precision="int8",
        provenance={"arch": "resnet18", "valid_error_rate": 0.05, "versions": {"torch": "2.14.1"}},
        parity={"images": 120, "top1_agree": 1.0, "max_abs_prob_diff": 0.004}),
    "squish-unicode": ModelInfo(labels=("chat noir", "éléphant", "熊"),
                                preprocess=Preprocess(size=(32, 64), resize="squish")),
}


def valid_block() -> dict:
    return INFOS["pad-int8-parity"].to_dict()


@pytest.mark.parametrize("name", sorted(INFOS))
def test_json_round_trip(name: str) -> None:
    info = INFOS[name]
    assert ModelInfo.from_json(info.to_json()) == info


@pytest.mark.parametrize("name", sorted(INFOS))
def test_round_trip_through_an_onnx_file(tmp_path, name: str) -> None:
    """What export writes into metadata_props, onnxruntime alone reads back unchanged."""
    info = INFOS[name]  # every INFOS entry has 3 labels, as the colour graph has 3 outputs
    path = tiny_models.save(tiny_models.colour_graph(info.preprocess.size), tmp_path / "m.onnx", info)
    assert Classifier.load(path).info == info


def test_to_dict_writes_the_fixed_signature() -> None:
    d = INFOS["defaults"].to_dict()
    assert d["schema"] == SCHEMA_VERSION
    assert d["input"] == INPUT_SPEC == {"name": "image", "dtype": "uint8", "layout": "NHWC", "color": "RGB"}
    assert d["output"] == OUTPUT_SPEC
    assert d["preprocess"] == {"size": [224, 224], "resize": "crop", "pad_mode": "reflection",
                               "interpolation": "bilinear", "exif_transpose": True,
                               "background": [255, 255, 255]}
    assert json.loads(INFOS["defaults"].to_json()) == d


def test_optional_fields_take_their_defaults() -> None:
    info = ModelInfo.from_json(json.dumps({"schema": 1, "labels": ["a", "b"], "preprocess": {"size": [8, 16]}}))
    assert info.precision == "fp32" and info.parity is None and dict(info.provenance) == {}
    assert info.preprocess == Preprocess(size=(8, 16))


def test_replace_returns_a_changed_copy() -> None:
    base = INFOS["defaults"]
    changed = base.replace(precision="int8", parity={"top1_agree": 1.0})
    assert (changed.precision, base.precision) == ("int8", "fp32")
    assert changed.labels == base.labels


def _edit(**changes) -> str:
    d = valid_block()
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = d
        for p in parents:
            target = target[p]
        if value is DELETE:
            del target[key]
        else:
            target[key] = value
    return json.dumps(d)


DELETE = object()

REFUSALS = {
    "newer schema": (_edit(schema=SCHEMA_VERSION + 1), "upgrade with pip install -U edge-infer"),
    "schema 0": (_edit(schema=0), "unknown edge_infer metadata schema 0"),
    "schema not an int": (_edit(schema="1"), "no integer 'schema'"),
    "no schema": (_edit(schema=DELETE), "no integer 'schema'"),
    "not JSON": ('{"schema": 1, "labels": [', "not valid JSON"),
    "JSON but a list": ("[1, 2]", "no integer 'schema'"),
    "missing labels": (_edit(labels=DELETE), "missing field 'labels'"),
    "labels a string": (_edit(labels="abc"), "'labels' must be a list of strings"),
    "labels not strings": (_edit(labels=[1, 2]), "'labels' must be a list of strings"),
    "one label": (_edit(labels=["only"]), "at least two labels"),
    "duplicate labels": (_edit(labels=["a", "a"]), "labels must be unique"),
    "missing preprocess": (_edit(preprocess=DELETE), "missing field 'preprocess'"),
    "missing size": (_edit(preprocess__size=DELETE), "missing field 'size'"),
    "size of one number": (_edit(preprocess__size=[224]), "invalid edge_infer metadata"),
    "size zero": (_edit(preprocess__size=[0, 224]), "size must be two positive ints"),
    "unknown resize": (_edit(preprocess__resize="zoom"), "resize 'zoom' is not one of ['crop', 'squish', 'pad']"),
    "unknown pad mode": (_edit(preprocess__pad_mode="wrap"), "pad_mode 'wrap' is not one of"),
    "unknown interpolation": (_edit(preprocess__interpolation="nearest"), "interpolation 'nearest'"),
    "bad background": (_edit(preprocess__background=[0, 0, 300]), "background must be three ints"),
    "unknown precision": (_edit(precision="fp16"), "precision 'fp16' is not one of ['fp32', 'int8']"),
    "float input": (_edit(input__dtype="float32"), "metadata input is"),
    "NCHW input": (_edit(input__layout="NCHW"), "metadata input is"),
    "BGR input": (_edit(input__color="BGR"), "metadata input is"),
    "input renamed": (_edit(input__name="pixels"), "metadata input is"),
    "input not an object": (_edit(input="image"), "metadata input is"),
    "logits output": (_edit(output__kind="logits"), "metadata output is"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_bad_block_is_refused_with_the_source_named(case: str) -> None:
    text, message = REFUSALS[case]
    with pytest.raises(ModelFormatError) as err:
        ModelInfo.from_json(text, source="pets.onnx")
    assert str(err.value).startswith("pets.onnx")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", ["float input", "logits output"])
def test_a_wrong_signature_names_the_fix(case: str) -> None:
    with pytest.raises(ModelFormatError, match="re-export it with python -m export"):
        ModelInfo.from_json(REFUSALS[case][0], source="m.onnx")


@pytest.mark.parametrize("kwargs", [
    {"size": (224,)}, {"size": (224.0, 224)}, {"size": (-1, 5)}, {"size": (8, 8), "resize": "Crop"},
])
def test_preprocess_validates_in_python_too(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        Preprocess(**kwargs)

"""parity.json's keys are a contract: users' scripts, ``demo`` and ``benchmarks`` read them.

``export.report.ExportReport.to_dict`` writes the file from frozen results. The lists below are
the keys of a parity.json written by the pipeline before its results were typed (dicts, main at
12fb3c6), from the same kind of run: a real export of a one-epoch ResNet18, fp32 with both parity
tiers, then int8 under ``--force`` so that the int8 file is written whatever the gate says (the
gate's outcome on a one-epoch model is not asserted). The metadata's ``parity`` keys likewise.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("fastai")
pytest.importorskip("onnx")

from test_export import make_shapes, train_run  # noqa: E402

from edge_infer import Classifier  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

GATE = ["files", "agreement", "agreement_lower95", "flips", "near_tie_flips", "confident_flips", "fp32_accuracy",
        "int8_accuracy", "accuracy_drop", "max_prob_diff", "flipped", "gate", "gate.max_accuracy_drop",
        "gate.near_tie_margin", "gate.confident_flips", "passed"]
CANARIES = ["key", "count", "bytes", "probabilities"]
PARITY_JSON = [
    "model", "run", "opset", "export_seconds", "checked",
    "tensor", "tensor.rtol", "tensor.atol", "tensor.batches", "tensor.real_images", "tensor.max_abs_diff",
    "tensor.passed", "tensor.cases", "tensor.cases[].input", "tensor.cases[].batch", "tensor.cases[].max_abs_diff",
    "tensor.cases[].passed",
    "files", "files.files", "files.top1_equal", "files.top1_agreement", "files.max_prob_diff", "files.worst_file",
    "files.tolerance", "files.tolerance.top1_agreement", "files.tolerance.max_prob_diff", "files.learner_accuracy",
    "files.onnx_accuracy", "files.disagreements", "files.passed",
    "canaries", *(f"canaries.{k}" for k in CANARIES), "size_bytes",
    "int8", "int8.model", *(f"int8.{k}" for k in GATE),
    "int8.format", "int8.activations", "int8.weights", "int8.calibration", "int8.calibration_images",
    "int8.float_layers", "int8.latency_vs_all_int8", "int8.always_float", "int8.accuracy_control",
    "int8.accuracy_control.budget", "int8.accuracy_control.probe_files", "int8.accuracy_control.seconds",
    "int8.accuracy_control.tried", "int8.accuracy_control.tried[].float_layers",
    "int8.accuracy_control.tried[].agreement", "int8.accuracy_control.tried[].near_tie_flips",
    "int8.accuracy_control.tried[].confident_flips", "int8.accuracy_control.tried[].accuracy_drop",
    "int8.accuracy_control.tried[].passed", "int8.accuracy_control.most_sensitive", "int8.accuracy_control.latency",
    "int8.canaries", *(f"int8.canaries.{k}" for k in CANARIES),
    "int8.size_bytes", "int8.onnxruntime_ops", "int8.backends",
]
OPENVINO = ["int8.backends.openvino", "int8.backends.openvino.backend", *(f"int8.backends.openvino.{k}" for k in GATE)]
METADATA_PARITY = {
    "tensor": ["rtol", "atol", "batches", "max_abs_diff", "passed"],
    "files": ["files", "top1_agreement", "max_prob_diff", "tolerance", "learner_accuracy", "onnx_accuracy", "passed"],
    "int8": ["files", "agreement", "agreement_lower95", "near_tie_flips", "confident_flips", "fp32_accuracy",
             "int8_accuracy", "accuracy_drop", "gate", "calibration_images", "float_layers", "passed"],
}


def key_paths(value, at: str = "") -> list[str]:
    """Every key of a JSON value as a dotted path (list items as ``[]``), each once, in first-seen
    order. Left out: the op counts (keyed by op name) and the flipped files (one per flip)."""
    paths: list[str] = []
    items = value.items() if isinstance(value, dict) else ()
    for key, v in items:
        path = f"{at}.{key}" if at else key
        paths.append(path)
        if key in ("onnxruntime_ops", "flipped"):
            continue
        for element in (v if isinstance(v, list) else [v]):
            paths += key_paths(element, f"{path}[]" if isinstance(v, list) else path)
    return list(dict.fromkeys(paths))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[object, Path]:
    from export.pipeline import export_run

    root = tmp_path_factory.mktemp("report")
    run = train_run(make_shapes(root / "data", per_class=8, seed=1), root / "run", arch="resnet18", size=32, epochs=1)
    out = root / "out" / "m.onnx"
    report = export_run(run, out, int8=True, force=True, calib=20, max_float_layers=0, echo=lambda line: None)
    return report, out


def test_parity_json_keeps_its_keys(exported):
    report, out = exported
    written = json.loads((out.parent / "parity.json").read_text())
    assert report.to_dict() == written  # the returned report is the one written
    openvino = importlib.util.find_spec("openvino") is not None
    assert key_paths(written) == PARITY_JSON + (OPENVINO if openvino else [])
    for section in [written["int8"], *written["int8"]["backends"].values()]:
        assert all(list(flip) == ["file", "fp32_margin"] for flip in section["flipped"])


def test_the_metadata_keeps_its_parity_keys(exported):
    _, out = exported
    fp32 = Classifier.load(out).info.parity
    int8 = Classifier.load(out.with_name("m.int8.onnx")).info.parity
    def sections(parity: dict) -> dict[str, list[str]]:
        return {k: list(v) for k, v in parity.items() if k != "forced"}  # forced: only on a failed check

    assert sections(fp32) == {k: METADATA_PARITY[k] for k in ("tensor", "files")}
    assert sections(int8) == METADATA_PARITY and int8.get("forced", False) is (not int8["int8"]["passed"])

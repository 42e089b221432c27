"""``python -m export``: a ResNet34 trained on tiny generated images, exported and checked for real.

The data: light shapes (a disc, a horizontal bar, a vertical bar) a little brighter than a light
background, 48x48. A ResNet34 from random weights separates them in ~10 epochs, so agreement
numbers mean something. Everything the images carry sits above ImageNet's mean grey, so an int8
model calibrated on black images (input range [-2.1, 0] after ``Normalize``) clips every real
pixel to the same value: the gate must refuse it.

Tolerances are the exporter's own (export.parity): tensor tier rtol 1e-3 / atol 1e-4, file tier
top-1 equal on every file and max probability difference 1e-3.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastai")
pytest.importorskip("onnx")

import onnx  # noqa: E402

from edge_infer import Classifier, Preprocess  # noqa: E402
from edge_infer.canaries import CANARIES_KEY  # noqa: E402
from edge_infer.metadata import METADATA_KEY  # noqa: E402
from export.train_config import TrainConfig  # noqa: E402

pytestmark = [pytest.mark.torch]

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("disc", "horizontal", "vertical")
SIZE = 48


def make_shapes(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    """``root/<shape>/NNN.jpg``: a light shape on a slightly darker light background, JPEG."""
    rng = np.random.default_rng(seed)
    for label in SHAPES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(48, 80)), int(rng.integers(48, 80))  # crop/pad differ from squish
            bg = int(rng.integers(140, 180))
            img = Image.new("RGB", (w, h), tuple(int(bg + v) for v in rng.integers(0, 10, 3)))
            fg = tuple(int(bg + 45 + v) for v in rng.integers(0, 25, 3))
            cx, cy, s = w // 2 + int(rng.integers(-5, 6)), h // 2 + int(rng.integers(-5, 6)), min(w, h)
            long, short = s // 2.5, s // 10
            box = {"disc": (s // 4, s // 4), "horizontal": (long, short), "vertical": (short, long)}[label]
            draw = ImageDraw.Draw(img).ellipse if label == "disc" else ImageDraw.Draw(img).rectangle
            draw((cx - box[0], cy - box[1], cx + box[0], cy + box[1]), fill=fg)
            noisy = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, (h, w, 3))
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(root / label / f"{i:03d}.jpg", quality=90)
    return root


def train_run(data: Path, out: Path, *, arch: str = "resnet34", size: int = SIZE, resize: str = "crop",
              epochs: int = 10) -> Path:
    """A run folder written by the training code itself (train.fit), from random weights."""
    from train.fit import fit

    return fit(data, out, TrainConfig(arch=arch, size=size, resize=resize, epochs=epochs, lr=1e-2, bs=16,
                                      pretrained=False, seed=42))


def export_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m export ...`` in a fresh interpreter, from the repository root."""
    return subprocess.run([sys.executable, "-m", "export", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory) -> Path:
    return train_run(shapes, tmp_path_factory.mktemp("runs") / "shapes-crop")


@dataclass(frozen=True)
class Exported:
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Exported:
    """The whole CLI: fp32 + parity + int8, as a user runs it."""
    out = tmp_path_factory.mktemp("exported") / "shapes.onnx"
    result = export_cli(run, "--out", out, "--int8", "--calib", 60)
    return Exported(out, result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def report(exported) -> dict:
    assert exported.returncode == 0, exported.stderr[-3000:]
    return json.loads((exported.out.parent / "parity.json").read_text())


def copy_run(run: Path, dest: Path, *, data: Path | None = None, **preprocess) -> Path:
    """A copy of ``run`` whose train.json points at ``data`` and/or has other preprocessing."""
    shutil.copytree(run, dest)
    info = json.loads((dest / "train.json").read_text())
    info["data"] = str(data or info["data"])
    info["preprocess"].update(preprocess)
    (dest / "train.json").write_text(json.dumps(info))
    return dest


# ----------------------------------------------------------------------------- fp32 and parity


@pytest.mark.slow
def test_cli_writes_the_model_and_the_int8_model(exported, report):
    out = exported.out
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["parity.json", "shapes.int8.onnx", "shapes.onnx"]
    assert "tensor tier" in exported.stdout and "file tier" in exported.stdout
    assert exported.stdout.count(": passed\n") == 3  # tensor tier, file tier, int8 gate
    assert report["model"] == "shapes.onnx" and report["opset"] == 18


@pytest.mark.slow
def test_tensor_tier_covers_batches_and_inputs(report):
    """Deployable in torch vs onnxruntime: rtol 1e-3 / atol 1e-4, random and real, batch 1/3/8."""
    t = report["tensor"]
    assert t["passed"] and (t["rtol"], t["atol"]) == (1e-3, 1e-4)
    assert {(c["input"], c["batch"]) for c in t["cases"]} == {
        (kind, b) for kind in ("random", "real") for b in (1, 3, 8)}
    assert t["max_abs_diff"] < 1e-5  # measured ~1e-7: far inside the tolerance


@pytest.mark.slow
def test_file_tier_matches_fastai_on_every_validation_file(run, report):
    """The learner's own pipeline vs edge_infer: top-1 equal on all, max |p diff| <= 1e-3."""
    f = report["files"]
    valid = pd.read_csv(run / "split.csv").query("split == 'valid'")
    assert f["passed"] and f["files"] == len(valid) > 0
    assert f["top1_agreement"] == 1.0 and f["disagreements"] == []
    assert f["max_prob_diff"] <= 1e-3 and f["worst_file"] in set(valid["path"])
    assert f["learner_accuracy"] == f["onnx_accuracy"] >= 0.8  # the model really separates shapes


@pytest.mark.slow
def test_graph_signature_and_format(report, exported):
    model = onnx.load(str(exported.out))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", SIZE, SIZE, 3]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    assert model.ir_version <= 9  # onnxruntime 1.17, the wheel's floor, reads IR 9
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.key for p in model.metadata_props) == [METADATA_KEY, CANARIES_KEY]  # docs/model-format.md


@pytest.mark.slow
def test_metadata_round_trip(run, report, exported):
    train = json.loads((run / "train.json").read_text())
    info = Classifier.load(exported.out).info
    assert info.labels == SHAPES == tuple(train["labels"])
    assert info.preprocess == Preprocess.from_dict(train["preprocess"])
    assert info.precision == "fp32"
    p = info.provenance
    assert (p["arch"], p["run"], p["opset"]) == ("resnet34", run.name, 18)
    assert p["valid_error_rate"] == train["metrics"]["error_rate"] and p["metrics"] == train["metrics"]
    assert p["trained_with"] == train["versions"] and p["exported_with"]["onnx"] == onnx.__version__
    assert p["normalize"]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # from learn.dls, not retyped
    assert info.parity["tensor"]["passed"] and info.parity["files"]["passed"]
    assert info.parity["files"]["max_prob_diff"] == report["files"]["max_prob_diff"]


@pytest.mark.slow
def test_edge_infer_info_cli_reads_the_export(exported):
    cli = pytest.importorskip("edge_infer.cli")
    from click.testing import CliRunner

    result = CliRunner().invoke(cli.cli, ["info", "--json", str(exported.out)])
    assert result.exit_code == 0, result.output
    block = json.loads(result.output)
    assert block["labels"] == list(SHAPES) and block["precision"] == "fp32"
    assert block["parity"]["files"]["passed"]


@pytest.mark.slow
def test_exported_model_classifies_like_the_learner(run, exported, shapes):
    valid = pd.read_csv(run / "split.csv").query("split == 'valid'")
    clf = Classifier.load(exported.out, threads=1)
    predicted = [p.label for p in clf.predict_batch([shapes / p for p in valid["path"]])]
    assert np.mean(np.array(predicted) == valid["label"].to_numpy()) >= 0.8


# -------------------------------------------------------------------------------------- int8


@pytest.mark.slow
def test_int8_passes_the_gate_and_runs_qdq_kernels(report, exported):
    q = report["int8"]
    assert q["passed"] and q["model"] == "shapes.int8.onnx" and q["calibration_images"] == 60
    assert q["confident_flips"] == 0 and q["accuracy_drop"] <= 0.005
    assert q["size_bytes"] < 0.3 * report["size_bytes"]
    ops = q["onnxruntime_ops"]
    # Every Conv fused into a u8s8 QLinearConv (VNNI-friendly), except those accuracy control kept
    # in float (none on this easy model unless the CPU's rounding flips a near-tie).
    floats = len(q["float_layers"])
    assert ops.get("QLinearConv", 0) + floats >= 36 and ops.get("Conv", 0) + ops.get("FusedConv", 0) <= floats
    assert ops.get("Softmax") == 1 and "QLinearSoftmax" not in ops
    assert "QLinearMatMul" not in ops and "QLinearGlobalAveragePool" not in ops  # the head stays float
    info = Classifier.load(exported.out.with_name("shapes.int8.onnx")).info
    assert info.precision == "int8" and info.labels == SHAPES
    assert info.parity["int8"]["passed"] and info.parity["int8"]["agreement"] == q["agreement"]
    assert info.provenance["quantization"]["calibration_images"] == 60
    assert info.provenance["quantization"]["float_layers"] == q["float_layers"]
    assert info.parity["int8"]["confident_flips"] == 0 and 0 < info.parity["int8"]["agreement_lower95"] <= q["agreement"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shapes.onnx", "shapes.int8.onnx"])
def test_both_files_carry_canaries_that_verify_on_onnxruntime(report, exported, name):
    """The real export's canaries, within the budget, reproduced here (docs/model-format.md)."""
    from export.canaries import MAX_COUNT, budget

    path = exported.out.with_name(name)
    summary = report["canaries"] if name == "shapes.onnx" else report["int8"]["canaries"]
    assert Classifier.load(path).info.canaries == summary
    assert 1 <= summary["count"] <= MAX_COUNT and summary["bytes"] <= budget(path.stat().st_size)
    assert summary["probabilities"] == (["fp32"] if name == "shapes.onnx" else ["fp32", "int8"])
    done = subprocess.run([sys.executable, "-m", "edge_infer", "verify", str(path), "--backend", "onnxruntime"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "onnxruntime: verified on this machine" in done.stdout
    assert Classifier.load(path, verify=True).info.canaries == summary


@pytest.mark.slow
def test_the_int8_gate_is_reported_for_every_installed_backend(report):
    backends = report["int8"]["backends"]
    if importlib.util.find_spec("openvino") is None:
        assert backends == {}
        return
    ov = backends["openvino"]
    assert "OpenVINO" in ov["backend"] and ov["files"] == report["int8"]["files"]
    assert set(ov) >= {"agreement", "confident_flips", "near_tie_flips", "gate", "passed"}


@pytest.fixture(scope="module")
def black_calibration_run(run, shapes, tmp_path_factory) -> Path:
    """The run, with every training image (the calibration pool) replaced by a black one."""
    data = tmp_path_factory.mktemp("black") / "data"
    shutil.copytree(shapes, data)
    split = pd.read_csv(run / "split.csv")
    for path in split.query("split == 'train'")["path"]:
        Image.new("RGB", Image.open(data / path).size).save(data / path)
    return copy_run(run, tmp_path_factory.mktemp("black-run") / "run", data=data)


@pytest.mark.slow
def test_int8_calibrated_on_black_images_is_refused(black_calibration_run, tmp_path):
    out = tmp_path / "model.onnx"
    result = export_cli(black_calibration_run, "--out", out, "--int8", "--no-check", "--max-float-layers", "0")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"Error: {tmp_path / 'model.int8.onnx'}: int8 gate failed")
    assert "tried all-int8; not written" in error[0]
    assert out.exists() and not (tmp_path / "model.int8.onnx").exists()
    q = json.loads((tmp_path / "parity.json").read_text())["int8"]
    assert not q["passed"] and q["agreement"] < 0.9 and q["confident_flips"] > 0
    assert [len(t["float_layers"]) for t in q["accuracy_control"]["tried"]] == [0]


@pytest.mark.slow
def test_force_writes_a_failed_int8_model_and_says_so(black_calibration_run, tmp_path):
    from export.pipeline import export_run

    lines: list[str] = []
    report = export_run(black_calibration_run, tmp_path / "m.onnx", int8=True, check=False, force=True,
                        calib=20, max_float_layers=0, echo=lines.append)
    wrote = next(line for line in lines if line.startswith("int8: wrote"))  # other backends' lines follow
    assert report.int8 is not None and not report.int8.gate.passed and "FAILED, written anyway (--force)" in wrote
    info = Classifier.load(tmp_path / "m.int8.onnx").info
    assert info.precision == "int8" and info.parity["forced"] and not info.parity["int8"]["passed"]


# --------------------------------------------------------------------------- breach, resizes


@pytest.mark.slow
def test_parity_breach_exits_non_zero_and_writes_no_model(run, shapes, tmp_path):
    """train.json says no EXIF rotation; the learner's loader rotates: a real breach.

    One validation image gets an EXIF orientation (rotate 90°): fastai sees it rotated, the
    exported model (told exif_transpose=false) sees it as stored.
    """
    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    victim = pd.read_csv(run / "split.csv").query("split == 'valid' and label == 'horizontal'")["path"].iloc[0]
    img = Image.open(data / victim)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(data / victim, quality=95, exif=exif)
    bad = copy_run(run, tmp_path / "run", data=data, exif_transpose=False)
    result = export_cli(bad, "--out", tmp_path / "m.onnx")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "parity breach" in error[0] and victim in error[0]
    assert not (tmp_path / "m.onnx").exists() and not list(tmp_path.glob(".*partial"))
    f = json.loads((tmp_path / "parity.json").read_text())["files"]
    assert not f["passed"] and f["worst_file"] == victim


@pytest.fixture(scope="module")
def few_shapes(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("few-shapes"), per_class=8, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("resize", ["crop", "squish", "pad"])
def test_every_resize_method_passes_the_file_tier(resize, few_shapes, tmp_path):
    """One epoch is enough: the file tier compares pipelines, not accuracy (ResNet18 for speed)."""
    from export.pipeline import export_run

    run = train_run(few_shapes, tmp_path / "run", arch="resnet18", size=32, resize=resize, epochs=1)
    report = export_run(run, tmp_path / "m.onnx", echo=lambda line: None)
    assert report.files is not None and report.files.passed and report.tensor is not None and report.tensor.passed
    info = Classifier.load(tmp_path / "m.onnx").info
    assert (info.preprocess.resize, info.preprocess.size) == (resize, (32, 32))

"""``edge-infer eval``, ``find_images``, the labelled-folder reader and the new user's pitfalls.

Real files and real onnxruntime sessions on the tiny models of tests/tiny_models.py (no torch).
The issue's "done when" is ``test_eval_accuracy_is_predicts_json_scored_by_hand``: Fashion-MNIST
held-out images (Debian's test IDX file) and a nearest-class-mean model built from the training
IDX file.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from click.testing import CliRunner
from conftest import FASHION_MNIST, require
from PIL import Image

from edge_infer import Classifier, DataError, ModelFormatError, find_images
from edge_infer.cli import cli
from edge_infer.evaluate import evaluate, write_report
from edge_infer.labelled import read_labelled


def run(*args: object):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def save(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tiny_models.solid(colour)).save(path)
    return path


@pytest.fixture
def labelled(tmp_path) -> Path:
    """DATA/<label>/*.png: red and blue right, one blue disguised as green, a broken file,
    and a hidden folder that must be skipped."""
    data = tmp_path / "data"
    for i in range(2):
        save(data / "red" / f"r{i}.png", "red")
        save(data / "blue" / f"b{i}.png", "blue")
    save(data / "green" / "g0.png", "green")
    save(data / "green" / "g1.png", "blue")  # mislabelled: the model will say blue
    (data / "green" / "broken.png").write_text("not a png")
    save(data / ".quarantine" / "red" / "q.png", "green")
    return data


# ------------------------------------------------------------------------------ find_images


def test_find_images_is_public_sorted_and_skips_hidden(labelled) -> None:
    assert find_images(labelled / "red") == [labelled / "red" / "r0.png", labelled / "red" / "r1.png"]
    found = [p.relative_to(labelled).as_posix() for p in find_images(labelled, recursive=True)]
    assert found == ["blue/b0.png", "blue/b1.png", "green/broken.png", "green/g0.png", "green/g1.png",
                     "red/r0.png", "red/r1.png"]
    assert find_images(labelled) == []  # nothing at the top level


def test_find_images_on_a_missing_folder_raises(tmp_path) -> None:
    for recursive in (False, True):
        with pytest.raises(FileNotFoundError):
            find_images(tmp_path / "nope", recursive=recursive)


def test_train_and_the_cli_use_the_one_suffix_list() -> None:
    import edge_infer.cli
    import edge_infer.files
    import train.download
    assert edge_infer.cli.IMAGE_SUFFIXES is edge_infer.files.IMAGE_SUFFIXES
    assert train.download.IMAGE_SUFFIXES is edge_infer.files.IMAGE_SUFFIXES


# --------------------------------------------------------------------- newcomer's pitfalls


@pytest.mark.parametrize("method", ["classify_files", "predict_batch"])
@pytest.mark.parametrize("bare", ["imgs", Path("imgs"), b"\xff\xd8"])
def test_a_bare_path_is_refused_pointing_to_find_images(colour_model, method, bare) -> None:
    clf = Classifier.load(colour_model)
    with pytest.raises(TypeError, match=r"find_images\(folder"):
        list(getattr(clf, method)(bare))


def test_top_k_above_the_label_count_warns_on_the_command_line(colour_model, colour_images) -> None:
    result = run("predict", colour_model, colour_images["red"], "--top-k", 5, "--format", "csv")
    assert result.exit_code == 0
    assert f"warning: --top-k 5 but {colour_model} has 3 labels; reporting all 3" in result.stderr
    header = next(csv.reader(io.StringIO(result.stdout)))
    assert header[-2:] == ["top3_label", "top3_score"]  # three pairs, not five half-empty ones


@pytest.mark.parametrize("name, content", [
    ("learner.pkl", pickle.dumps({"model": "a fastai learner"})),
    ("weights.pth", b"PK\x03\x04 a torch zip archive"),
])
def test_a_training_file_is_not_onnx_and_points_to_export(tmp_path, name, content) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=rf"{name}: not a valid ONNX model .*python -m export"):
        Classifier.load(path)


# ------------------------------------------------------------------------ labelled folders


def test_read_labelled_class_folders(labelled) -> None:
    folder = read_labelled(labelled)
    assert folder.layout == "folders" and folder.labels == ("blue", "green", "red")
    assert all(i.is_valid is None for i in folder.items)
    assert "red/q.png" not in {i.path for i in folder.items}


def test_read_labelled_train_valid_and_split(tmp_path) -> None:
    save(tmp_path / "train" / "red" / "a.png", "red")
    save(tmp_path / "valid" / "blue" / "b.png", "blue")
    folder = read_labelled(tmp_path)
    assert folder.layout == "train-valid"
    assert [(i.path, i.label, i.is_valid) for i in folder.split("valid").items] == [("valid/blue/b.png", "blue", True)]
    assert [i.label for i in folder.split("train").items] == ["red"]


def test_read_labelled_csv(tmp_path) -> None:
    save(tmp_path / "img" / "a.png", "red")
    save(tmp_path / "img" / "b.png", "blue")
    (tmp_path / "labels.csv").write_text("path,label,is_valid\r\nimg/a.png,red,False\r\nimg/b.png,blue,1\r\n"
                                         "img/gone.png,red,0\r\n")
    folder = read_labelled(tmp_path)
    assert folder.layout == "csv"
    assert [(i.path, i.label, i.is_valid) for i in folder.items] == [("img/a.png", "red", False),
                                                                     ("img/b.png", "blue", True)]


def test_a_bad_is_valid_names_the_line(tmp_path) -> None:
    save(tmp_path / "a.png", "red")
    (tmp_path / "labels.csv").write_text("path,label,is_valid\na.png,red,maybe\n")
    with pytest.raises(DataError, match=r"labels.csv: line 2: is_valid is 'maybe'"):
        read_labelled(tmp_path)


def test_a_split_on_class_folders_is_refused(labelled) -> None:
    with pytest.raises(DataError, match="gives no train/valid split"):
        read_labelled(labelled).split("valid")


# ----------------------------------------------------------------------------------- eval


def test_evaluate_scores_and_lists_failures(colour_model, labelled) -> None:
    report = evaluate(Classifier.load(colour_model), labelled)
    assert (len(report.outcomes), len(report.scored), report.correct) == (7, 6, 5)
    assert report.accuracy == pytest.approx(5 / 6)
    assert [o.path for o in report.failed] == [str(labelled / "green" / "broken.png")]
    scores = {c.label: c for c in report.per_class}
    assert (scores["blue"].precision, scores["blue"].recall) == pytest.approx((2 / 3, 1.0))
    assert (scores["green"].precision, scores["green"].recall, scores["green"].support) == (1.0, 0.5, 2)
    assert report.most_confused() == [("green", "blue", 1)]
    assert report.confusion.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 2]]  # red, green, blue


def test_eval_command_prints_writes_and_exits_1_on_a_failed_file(colour_model, labelled, tmp_path) -> None:
    out = tmp_path / "report"
    result = run("eval", colour_model, labelled, "--out", out)
    assert result.exit_code == 1
    assert "accuracy  0.8333 (5 of 6)" in result.stdout
    assert "  green -> blue: 1" in result.stdout
    assert f"{labelled / 'green' / 'broken.png'}: not an image" in result.stdout
    assert result.stderr.strip().endswith("1 of 7 images failed")
    summary = json.loads((out / "eval.json").read_text())
    assert summary["accuracy"] == pytest.approx(5 / 6) and summary["failed_count"] == 1
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 7 and sum(r["correct"] == "1" for r in rows) == 5
    assert [r["error"] != "" for r in rows].count(True) == 1
    pytest.importorskip("matplotlib")
    assert Image.open(out / "confusion_matrix.png").format == "PNG"


def test_eval_json_on_stdout(colour_model, labelled) -> None:
    result = run("eval", colour_model, labelled, "--json")
    assert json.loads(result.stdout)["confusion"]["labels"] == list(tiny_models.COLOURS)


def test_eval_refuses_labels_the_model_does_not_have(colour_model, labelled) -> None:
    save(labelled / "purple" / "p.png", "red")
    result = run("eval", colour_model, labelled)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: {labelled}: label(s) ['purple'] are not labels of {colour_model}; the folder's labels: "
        "['blue', 'green', 'purple', 'red']; the model's labels: ['red', 'green', 'blue']")


def test_eval_never_writes_into_a_folder_with_files(colour_model, labelled, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "predictions.csv").write_text("the user's own file")
    result = run("eval", colour_model, labelled, "--out", out)
    assert result.exit_code == 1 and "exists and is not an empty folder" in result.stderr
    assert (out / "predictions.csv").read_text() == "the user's own file"
    with pytest.raises(DataError):
        write_report(evaluate(Classifier.load(colour_model), labelled), out)


def test_eval_split_valid_scores_only_the_validation_images(colour_model, tmp_path) -> None:
    save(tmp_path / "train" / "red" / "a.png", "blue")  # wrong, but training images
    save(tmp_path / "valid" / "red" / "b.png", "red")
    result = run("eval", colour_model, tmp_path, "--split", "valid")
    assert result.exit_code == 0 and "accuracy  1.0000 (1 of 1)" in result.stdout
    result = run("eval", colour_model, tmp_path)
    assert "accuracy  0.5000 (1 of 2)" in result.stdout and "--split valid" in result.stderr


# ------------------------------------------------------------- done when: Fashion-MNIST


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> tuple[Path, Path]:
    """(nearest-class-mean model from the training file, 100 held-out test images per class)."""
    require(FASHION_MNIST.is_dir(), "Debian's dataset-fashion-mnist", "apt-get install -y dataset-fashion-mnist")
    from train.datasets import fashion_mnist, make_data

    root = tmp_path_factory.mktemp("fashion")
    images, labels, names = fashion_mnist("train")
    model = tiny_models.centroid_model_file(root / "centroids.onnx", images, labels, names)
    make_data("fashion-mnist", root / "test", per_class=100, split="test")
    return model, root / "test"


def test_eval_accuracy_is_predicts_json_scored_by_hand(fashion) -> None:
    model, test = fashion
    cmd = [sys.executable, "-m", "edge_infer"]
    predicted = subprocess.run([*cmd, "predict", model, test, "--recursive", "--format", "json"],
                               capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in predicted.splitlines()]
    assert len(rows) == 1000
    by_hand = sum(Path(r["path"]).parent.name == r["label"] for r in rows) / len(rows)
    report = json.loads(subprocess.run([*cmd, "eval", model, test, "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    assert report["scored"] == 1000 and report["correct"] == round(by_hand * 1000)
    assert report["accuracy"] == by_hand
    assert 0.5 < by_hand < 0.9  # a real classifier (about 0.68), far from chance (0.1) and from perfect


def test_eval_and_the_cli_load_neither_ray_nor_pandas() -> None:
    """``edge-infer eval`` is torch-free and Ray loads only with --ray (fresh interpreter)."""
    code = ("import sys, edge_infer, edge_infer.evaluate, edge_infer.labelled, edge_infer.cli\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'pyarrow', 'pandas', 'torch', 'fastai', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"

"""Ray Data predictions equal the single-process ones, on a local cluster this module starts.

``ray.init(num_cpus=2)`` on 127.0.0.1, once for the module (a cluster takes seconds to start),
shut down at the end. Skipped with the install command when Ray is absent; in CI (where the dev
group installs it) a missing Ray fails.

"The same scores": the same bytes go through the same ``Classifier.classify_files`` in both paths;
the bound 1e-6 (relative) covers onnxruntime's batch-size-dependent float summation order, since
an actor's batch is not the single-process one.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import IN_CI
from PIL import Image

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
    MISSING = "Ray Data is missing: pip install 'edge-infer[ray]'"
    if IN_CI:
        raise ImportError(MISSING + " (the dev group should have installed it)")
    pytest.skip(MISSING, allow_module_level=True)

import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import tiny_models  # noqa: E402

from edge_infer import Classifier, EdgeInferError, find_images  # noqa: E402
from edge_infer.cli import cli  # noqa: E402
from edge_infer.ray import collect, predict_dataset, write_predictions  # noqa: E402

# A deadlock (actors holding every CPU while a read task waits) fails instead of hanging.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, colour_images) -> Path:
    """Nine good images in two folders, a broken one, an empty one, and a hidden one."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(3):
        for colour, path in colour_images.items():
            target = root / ("sub" if i == 2 else "") / f"{colour}{i}.jpg"
            target.parent.mkdir(exist_ok=True)
            shutil.copy(path, target)
    (root / "broken.jpg").write_text("not a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / ".cache").mkdir()
    shutil.copy(colour_images["red"], root / ".cache" / "hidden.jpg")
    return root


def single_process(model: Path, folder: Path, top_k: int = 1) -> list:
    clf = Classifier.load(model, threads=1)
    return list(clf.classify_files(find_images(folder, recursive=True), top_k=top_k))


def test_predict_dataset_equals_classify_files(colour_model, photos) -> None:
    expected = single_process(colour_model, photos, top_k=2)
    got = collect(predict_dataset(colour_model, photos, top_k=2, batch_size=3, rows_per_call=4),
                  order=[r.source for r in expected])
    assert [r.source for r in got] == [r.source for r in expected]
    assert len(expected) == 11
    for e, g in zip(expected, got, strict=True):
        if e.error is not None:
            assert str(g.error) == str(e.error)  # "PATH: empty file", "PATH: not an image (...)"
            continue
        assert g.prediction.label == e.prediction.label
        assert g.prediction.index == e.prediction.index
        assert g.prediction.score == pytest.approx(e.prediction.score, rel=1e-6)
        assert [label for label, _ in g.prediction.top_k] == [label for label, _ in e.prediction.top_k]


def test_write_predictions_records_failures_per_row(colour_model, photos, tmp_path) -> None:
    dataset = predict_dataset(colour_model, photos).materialize()  # one job, written twice
    tables = {fmt: sorted(Path(write_predictions(dataset, tmp_path / fmt, fmt=fmt)).glob(f"*.{fmt}"))
              for fmt in ("parquet", "csv")}
    for fmt, files in tables.items():
        rows = [r for f in files for r in (pq.read_table(f).to_pylist() if fmt == "parquet"
                                           else csv.DictReader(f.open()))]
        assert len(rows) == 11, fmt
        errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
        assert set(errors) == {"broken.jpg", "empty.png"}
        assert errors["empty.png"] == f"{photos / 'empty.png'}: empty file"
        labels = {Path(r["path"]).name: r["label"] for r in rows if not r["error"]}
        assert labels["red0.jpg"] == "red" and labels["blue2.jpg"] == "blue"
    with pytest.raises(EdgeInferError, match="not an empty folder"):
        write_predictions(dataset, tmp_path / "csv", fmt="csv")


def test_cli_predict_ray_prints_what_predict_prints(colour_model, photos) -> None:
    runner = CliRunner()
    args = ["predict", str(colour_model), str(photos), "-r", "--format", "json", "-k", "3"]
    plain, on_ray = runner.invoke(cli, args), runner.invoke(cli, [*args, "--ray"])
    assert (plain.exit_code, on_ray.exit_code) == (1, 1)
    assert on_ray.stderr == plain.stderr  # the same two failures, named the same way
    a, b = ([json.loads(line) for line in r.stdout.splitlines()] for r in (plain, on_ray))
    assert [(r["path"], r["label"]) for r in b] == [(r["path"], r["label"]) for r in a]
    assert [r["score"] for r in b] == pytest.approx([r["score"] for r in a], rel=1e-6)


def test_cli_eval_ray_gives_the_same_report(colour_model, tmp_path) -> None:
    data = tmp_path / "data"
    for colour in tiny_models.COLOURS:
        for i, other in enumerate(tiny_models.COLOURS):  # one right per class, two wrong
            (data / colour).mkdir(parents=True, exist_ok=True)
            Image.fromarray(tiny_models.solid(other)).save(data / colour / f"{i}.png")
    runner = CliRunner()
    plain = json.loads(runner.invoke(cli, ["eval", str(colour_model), str(data), "--json"]).stdout)
    on_ray = json.loads(runner.invoke(cli, ["eval", str(colour_model), str(data), "--json", "--ray"]).stdout)
    assert on_ray == plain
    assert plain["accuracy"] == pytest.approx(1 / 3)

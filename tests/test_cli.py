"""The ``edge-infer`` command through click's CliRunner, on the tiny colour model and real files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_models
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edge_infer import __version__
from edge_infer.bench import summarize, synthetic_photo, time_calls
from edge_infer.cli import PROGRESS_MIN_FILES, cli, find_images, show_progress
from edge_infer.metadata import ModelInfo, Preprocess


def run(*args: object):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.fixture
def folder(tmp_path, colour_images) -> Path:
    """Good images at the top and in sub/, bad ones beside them, and things a walk must skip."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / ".quarantine").mkdir()
    for path in colour_images.values():
        (root / path.name).write_bytes(path.read_bytes())
    Image.fromarray(tiny_models.solid("green")).save(root / "sub" / "leaf.png")
    Image.fromarray(tiny_models.solid("red")).save(root / ".quarantine" / "hidden.png")
    Image.fromarray(tiny_models.solid("red")).save(root / ".dotfile.png")
    (root / "broken.jpg").write_text("not a jpeg at all")
    jpeg = _noisy_jpeg()
    (root / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "notes.txt").write_text("not an image, and not named like one")
    return root


def _noisy_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------- predict


def test_predict_text(colour_model, colour_images) -> None:
    result = run("predict", colour_model, colour_images["red"], colour_images["blue"])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in lines(result.stdout)]
    assert [(r[0], r[1]) for r in rows] == [(str(colour_images["red"]), "red"), (str(colour_images["blue"]), "blue")]
    assert all(float(r[2]) > 0.99 for r in rows)
    assert result.stderr == ""


def test_predict_text_with_top_k(colour_model, colour_images) -> None:
    result = run("predict", colour_model, colour_images["green"], "--top-k", 3)
    path, label, score, top = result.stdout.strip().split("\t")
    assert label == "green" and top.startswith("green ") and top.count(",") == 2


def test_predict_json_is_one_object_per_line(colour_model, colour_images) -> None:
    result = run("predict", colour_model, *colour_images.values(), "--format", "json", "-k", 2)
    assert result.exit_code == 0
    objects = [json.loads(line) for line in lines(result.stdout)]
    assert [o["label"] for o in objects] == list(tiny_models.COLOURS)
    for o, path in zip(objects, colour_images.values(), strict=True):
        assert o["path"] == str(path) and o["score"] == o["top_k"][0][1] and len(o["top_k"]) == 2
        assert set(o) >= {"path", "label", "score", "top_k", "index"}


@pytest.mark.parametrize("top_k, columns", [
    (1, ["path", "label", "score", "index"]),
    (2, ["path", "label", "score", "index", "top1_label", "top1_score", "top2_label", "top2_score"]),
])
def test_predict_csv_has_a_header(colour_model, colour_images, top_k: int, columns: list[str]) -> None:
    result = run("predict", colour_model, colour_images["red"], colour_images["green"], "--format", "csv", "-k", top_k)
    assert result.exit_code == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == columns
    assert [r[1] for r in rows[1:]] == ["red", "green"] and all(len(r) == len(columns) for r in rows)


def test_a_folder_with_bad_files_classifies_the_good_ones_and_exits_1(colour_model, folder) -> None:
    result = run("predict", colour_model, folder)
    assert result.exit_code == 1
    good = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines(result.stdout)}
    assert good == {"red.jpg": "red", "green.jpg": "green", "blue.jpg": "blue"}  # not sub/, not hidden
    errors = lines(result.stderr)
    assert f"{folder / 'broken.jpg'}: not an image (Pillow cannot identify the format)" in errors
    assert any(e.startswith(f"{folder / 'cut.jpg'}: truncated or corrupt image data") for e in errors)
    assert errors[-1] == "2 of 5 images failed"
    assert "notes.txt" not in result.output


def test_recursive_walks_subfolders_but_not_hidden_ones(colour_model, folder) -> None:
    result = run("predict", colour_model, folder, "--recursive", "--format", "json")
    names = {Path(json.loads(line)["path"]).relative_to(folder).as_posix() for line in lines(result.stdout)}
    assert names == {"red.jpg", "green.jpg", "blue.jpg", "sub/leaf.png"}
    assert result.exit_code == 1


def test_find_images_is_sorted_and_skips_hidden(folder) -> None:
    assert [p.name for p in find_images(folder, recursive=False)] == ["blue.jpg", "broken.jpg", "cut.jpg",
                                                                     "green.jpg", "red.jpg"]


def test_a_named_file_is_tried_whatever_its_suffix(colour_model, colour_images, tmp_path) -> None:
    odd = tmp_path / "red.data"
    odd.write_bytes(colour_images["red"].read_bytes())
    result = run("predict", colour_model, odd)
    assert result.exit_code == 0 and result.stdout.split("\t")[1] == "red"


def test_a_missing_path_is_reported_and_the_rest_still_run(colour_model, colour_images, tmp_path) -> None:
    result = run("predict", colour_model, tmp_path / "gone.jpg", colour_images["red"])
    assert result.exit_code == 1
    assert lines(result.stderr)[0] == f"{tmp_path / 'gone.jpg'}: no such file"
    assert result.stdout.split("\t")[1] == "red"


def test_an_empty_folder_is_an_error(colour_model, tmp_path) -> None:
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    result = run("predict", colour_model, tmp_path / "empty")
    assert result.exit_code == 1
    assert lines(result.stderr)[0] == f"{tmp_path / 'empty'}: no image files (--recursive looks in subfolders)"


def test_min_confidence_gives_unknown(colour_model, tmp_path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (140, 128, 128)).save(grey)
    result = run("predict", colour_model, grey, "--min-confidence", 0.9, "--format", "json")
    assert json.loads(result.stdout)["label"] == "unknown"


@pytest.mark.parametrize("options", [
    ["--top-k", "0"], ["--min-confidence", "1.5"], ["--threads", "0"], ["--batch-size", "0"],
    ["--format", "xml"],
])
def test_bad_options_are_usage_errors(colour_model, colour_images, options) -> None:
    result = run("predict", colour_model, colour_images["red"], *options)
    assert result.exit_code == 2 and "Invalid value" in result.stderr


@pytest.mark.parametrize("threads, batch", [(1, 1), (2, 2)])
def test_threads_and_batch_size_give_the_same_answers(colour_model, folder, threads, batch) -> None:
    result = run("predict", colour_model, folder, "-r", "--threads", threads, "--batch-size", batch,
                 "--full-decode")
    assert len(lines(result.stdout)) == 4


def test_a_model_without_metadata_is_one_error_line(tmp_path, colour_images) -> None:
    model = tiny_models.save(tiny_models.colour_graph(), tmp_path / "plain.onnx")
    result = run("predict", model, colour_images["red"])
    assert result.exit_code == 1 and result.stdout == ""
    assert lines(result.stderr) == [f"Error: {model} has no edge_infer metadata; export it with "
                                    "python -m export, or inspect it with edge-infer info"]


def test_a_missing_model_is_a_usage_error(tmp_path, colour_images) -> None:
    result = run("predict", tmp_path / "nope.onnx", colour_images["red"])
    assert result.exit_code == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize("n, stderr_tty, stdout_tty, shown", [
    (PROGRESS_MIN_FILES, True, False, True),
    (PROGRESS_MIN_FILES - 1, True, False, False),  # few files: no bar
    (1000, False, False, False),                   # stderr is a log file or a pipe
    (1000, True, True, False),                     # results scroll on the same terminal
])
def test_the_progress_bar_is_for_long_runs_on_a_terminal(n, stderr_tty, stdout_tty, shown) -> None:
    assert show_progress(n, stderr_tty=stderr_tty, stdout_tty=stdout_tty) is shown


def test_no_progress_bar_when_stderr_is_not_a_terminal(colour_model, tmp_path, colour_images) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for i in range(PROGRESS_MIN_FILES + 5):
        (many / f"{i:03d}.jpg").write_bytes(colour_images["red"].read_bytes())
    result = run("predict", colour_model, many)
    assert result.exit_code == 0 and result.stderr == "" and len(lines(result.stdout)) == PROGRESS_MIN_FILES + 5


# -------------------------------------------------------------------------------------- info


def test_info_text(colour_model) -> None:
    result = run("info", colour_model)
    assert result.exit_code == 0
    text = result.stdout
    for expected in ("labels      3: red, green, blue", "image uint8 [N, 32, 32, 3] RGB",
                     "resize crop to 32x32 (h x w), bilinear", "precision   fp32",
                     "provenance  arch: channel-mean\n            made_by: tests/tiny_models.py",
                     "parity      not recorded"):
        assert expected in text


def test_info_json_is_the_metadata_block(colour_model) -> None:
    result = run("info", colour_model, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == tiny_models.colour_info().to_dict()


def test_info_shows_parity_and_many_labels(tmp_path) -> None:
    labels = tuple(f"class{i}" for i in range(50))
    info = ModelInfo(labels=labels, preprocess=Preprocess(size=(32, 32), resize="pad"),
                     precision="int8", parity={"files": {"top1_agreement": 1.0, "passed": True},
                                               "forced": True},
                     provenance={"valid_error_rate": 0.16428571939468384})
    model = tiny_models.save(_wide_graph(50), tmp_path / "many.onnx", info)
    result = run("info", model)
    assert result.exit_code == 0, result.output
    assert "labels      50: class0, class1" in result.stdout and "(10 more; --json lists all)" in result.stdout
    assert "parity      files: top1_agreement=1.0, passed=true\n            forced: true" in result.stdout
    assert "precision   int8" in result.stdout
    assert "resize pad, pad_mode reflection" in result.stdout
    assert "provenance  valid_error_rate: 0.1643\n" in result.stdout  # floats rounded for reading


def _wide_graph(n: int) -> onnx.ModelProto:
    """Channel means times a fixed [3, n] matrix, softmax: a valid model with many labels."""
    weights = np.random.default_rng(0).normal(size=(3, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "wide",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
                     numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("as_json", [False, True])
def test_info_on_an_onnx_file_without_metadata_shows_its_graph(tmp_path, as_json: bool) -> None:
    model = tiny_models.save(tiny_models.colour_graph(), tmp_path / "plain.onnx")
    result = run("info", model, *(["--json"] if as_json else []))
    assert result.exit_code == 1
    message = f"{model} has no edge_infer metadata; export it with python -m export, or inspect it with edge-infer info"
    assert lines(result.stderr) == [f"Error: {message}"]
    if as_json:
        d = json.loads(result.stdout)
        assert d["metadata"] is None and d["error"] == message
        assert d["inputs"] == [{"name": "image", "type": "tensor(uint8)", "shape": ["N", 32, 32, 3]}]
        assert d["outputs"] == [{"name": "probabilities", "type": "tensor(float)", "shape": ["N", 3]}]
    else:
        assert "input   image: tensor(uint8) [N, 32, 32, 3]" in result.stdout
        assert "output  probabilities: tensor(float) [N, 3]" in result.stdout


def test_info_on_a_mismatched_model_shows_its_graph(tmp_path) -> None:
    model = tiny_models.save(tiny_models.colour_graph(n_out=2), tmp_path / "two.onnx", tiny_models.colour_info())
    result = run("info", model)
    assert result.exit_code == 1 and "output  probabilities: tensor(float) [N, 2]" in result.stdout
    assert "but the metadata lists 3 labels" in result.stderr


def test_info_on_a_file_that_is_not_onnx(tmp_path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("hello")
    result = run("info", path)
    assert result.exit_code == 1 and result.stdout == ""
    assert lines(result.stderr)[0].startswith(f"Error: {path}: not a valid ONNX model")


# ------------------------------------------------------------------------------------- bench


def test_bench_writes_timings_as_json(colour_model, tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = run("bench", colour_model, "--runs", 3, "--warmup", 1, "--threads", 1, "--json", out)
    assert result.exit_code == 0, result.output
    assert "threads      1" in result.stdout and "model only (batch 1)" in result.stdout
    d = json.loads(out.read_text())
    assert d["threads"] == 1 and d["load_ms"] > 0 and d["first_call_ms"] > 0
    assert [t["name"] for t in d["end_to_end"]] == ["end to end 640x480 JPEG", "end to end 1920x1080 JPEG"]
    for t in [d["model_only"], *d["end_to_end"]]:
        assert t["runs"] == 3 and t["warmup"] == 1 and 0 < t["min_ms"] <= t["p50_ms"] <= t["p90_ms"] <= t["p99_ms"] <= t["max_ms"]


def test_bench_on_the_users_images(colour_model, colour_images) -> None:
    folder = colour_images["red"].parent
    result = run("bench", colour_model, "--images", folder, "--runs", 3, "--warmup", 0)
    assert result.exit_code == 0, result.output
    assert f"end to end {folder} (3 images)" in result.stdout
    assert "threads      onnxruntime default" in result.stdout


def test_bench_stops_at_a_bad_image_with_one_line(colour_model, tmp_path) -> None:
    (tmp_path / "broken.png").write_text("nope")
    result = run("bench", colour_model, "--images", tmp_path, "--runs", 1)
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"Error: {tmp_path / 'broken.png'}: not an image (Pillow cannot identify the format)"]


def test_summarize_gives_percentiles_in_milliseconds() -> None:
    t = summarize("x", [i / 1000 for i in range(1, 101)], warmup=2)  # 1..100 ms
    assert (t.runs, t.warmup, t.min_ms, t.max_ms) == (100, 2, pytest.approx(1.0), pytest.approx(100.0))
    assert (t.p50_ms, t.p90_ms, t.p99_ms) == (pytest.approx(50.5), pytest.approx(90.1), pytest.approx(99.01))
    assert t.to_dict()["p50_ms"] == t.p50_ms


def test_time_calls_warms_up_then_times() -> None:
    calls = []
    t = time_calls(lambda: calls.append(1), name="append", runs=4, warmup=3)
    assert len(calls) == 7 and t.runs == 4 and t.name == "append"
    with pytest.raises(ValueError, match="need runs >= 1"):
        time_calls(lambda: None, name="none", runs=0, warmup=0)


def test_synthetic_photos_are_deterministic_jpegs() -> None:
    a, b = synthetic_photo(320, 240, seed=1), synthetic_photo(320, 240, seed=1)
    assert a == b != synthetic_photo(320, 240, seed=2)
    with Image.open(io.BytesIO(a)) as img:
        assert (img.format, img.size) == ("JPEG", (320, 240))
        assert np.asarray(img).std() > 20  # not a flat image: it must cost a real decode


def test_bench_on_a_folder_without_images(colour_model, tmp_path) -> None:
    result = run("bench", colour_model, "--images", tmp_path, "--runs", 1)
    assert result.exit_code == 2 and "no image files" in result.stderr


# ------------------------------------------------------------------------------------- serve


@pytest.fixture
def fake_server(monkeypatch) -> list[tuple[tuple, dict]]:
    """Stands in for edge_infer.serve.command (tested in test_serve.py): records how serve() is called."""
    from edge_infer.serve.batching import BatchConfig
    from edge_infer.serve.run import ServerLimits

    calls: list[tuple[tuple, dict]] = []
    module = types.ModuleType("edge_infer.serve.command")
    module.serve = lambda *args, **kwargs: calls.append((args, kwargs))  # type: ignore[attr-defined]
    module.BatchConfig, module.ServerLimits = BatchConfig, ServerLimits  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edge_infer.serve.command", module)
    return calls


def test_serve_passes_its_defaults(colour_model, fake_server) -> None:
    from edge_infer.serve import BatchConfig

    assert run("serve", colour_model).exit_code == 0
    (args, kwargs), = fake_server
    assert args == (str(colour_model),)
    assert {k: v for k, v in kwargs.items() if k not in ("batching", "limits")} == {
        "host": "127.0.0.1", "port": 8000, "max_bytes": 20_000_000, "threads": None, "timeout": 10.0,
        "allow_hosts": (), "access_log": True, "backend": "onnxruntime", "inference_precision": "f32",
        "providers": None}
    assert kwargs["batching"] == BatchConfig()
    assert (kwargs["limits"].max_connections, kwargs["limits"].drain_timeout) == (512, 10.0)


def test_serve_passes_its_options(colour_model, fake_server) -> None:
    result = run("serve", colour_model, "--host", "0.0.0.0", "--port", 9001, "--max-bytes", 1000,
                 "--threads", 2, "--timeout", 2.5, "--allow-host", "a.lan", "--allow-host", "b.lan",
                 "--max-batch", 1, "--max-wait-ms", 0, "--max-queue", 5, "--decode-memory-mb", 100,
                 "--max-connections", 50, "--no-access-log")
    assert result.exit_code == 0, result.output
    kwargs = fake_server[0][1]
    assert {k: kwargs[k] for k in ("host", "port", "max_bytes", "threads", "timeout", "allow_hosts",
                                   "access_log")} == {
        "host": "0.0.0.0", "port": 9001, "max_bytes": 1000, "threads": 2, "timeout": 2.5,
        "allow_hosts": ("a.lan", "b.lan"), "access_log": False}
    b = kwargs["batching"]
    assert (b.max_batch, b.max_wait_ms, b.max_queue, b.decode_memory) == (1, 0.0, 5, 100 << 20)
    assert kwargs["limits"].max_connections == 50


@pytest.mark.parametrize("options", [["--port", "70000"], ["--timeout", "0"], ["--max-bytes", "0"]])
def test_serve_refuses_bad_options(colour_model, fake_server, options) -> None:
    result = run("serve", colour_model, *options)
    assert result.exit_code == 2 and fake_server == []


# -------------------------------------------------------------------------------------- misc


def test_python_dash_m_runs_the_same_command(colour_model, colour_images) -> None:
    done = subprocess.run([sys.executable, "-m", "edge_infer", "predict", str(colour_model), str(colour_images["red"])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\t")[1] == "red"


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"edge-infer, version {__version__}"

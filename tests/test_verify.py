"""``edge-infer verify``, ``Classifier.load(verify=True)`` and ``auto``: canaries stored in the file,
run on this machine's backends (``edge_infer.verify``). Real ONNX files and sessions throughout;
the "broken" file is a real one whose weights were changed after its canaries were stored."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_models
from click.testing import CliRunner
from onnx import numpy_helper
from test_backends import conv_model_file

from edge_infer import Classifier
from edge_infer.canaries import CANARIES_KEY, Canaries
from edge_infer.cli import cli
from edge_infer.errors import ModelFormatError
from edge_infer.metadata import METADATA_KEY, ModelInfo
from edge_infer.verify import CanaryMismatch, NoCanaries

SIZE = 32


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (40, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, pixels) -> Path:
    path = conv_model_file(tmp_path_factory.mktemp("verify") / "conv.onnx", size=SIZE)
    return tiny_models.add_canaries(path, pixels)


@pytest.fixture(scope="module")
def altered(fp32: Path, tmp_path_factory) -> Path:
    """``fp32`` with its first conv's weights scaled by 1.05 after the canaries were stored."""
    model = onnx.load(str(fp32))
    w1 = next(t for t in model.graph.initializer if t.name == "w1")
    w1.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w1) * np.float32(1.05), "w1"))
    out = tmp_path_factory.mktemp("altered") / "altered.onnx"
    onnx.save(model, str(out))
    return out


def verify_cli(*args: str):
    return CliRunner().invoke(cli, ["verify", *map(str, args)])


def test_verify_passes_on_the_file_it_was_made_from(fp32: Path) -> None:
    result = verify_cli(fp32, "--backend", "onnxruntime", "--threads", "1")
    assert result.exit_code == 0, result.output
    line = next(s for s in result.output.splitlines() if s.startswith("onnxruntime"))
    n = len(read_canaries(fp32))
    assert "fp32 file" in line and "PASS (max |dp| <= 0.001)" in line and f"top-1 equal {n}/{n}" in line


def test_altered_weights_fail_verify_load_and_auto(altered: Path) -> None:
    result = verify_cli(altered, "--backend", "onnxruntime", "--threads", "1")
    assert result.exit_code == 1
    assert "FAIL (max |dp| <= 0.001)" in result.output
    assert "onnxruntime: does NOT reproduce the canaries on this machine" in result.output
    with pytest.raises(CanaryMismatch, match=r"altered.onnx: the file's canaries are not reproduced"):
        Classifier.load(altered, verify=True)
    with pytest.raises(CanaryMismatch, match="onnxruntime"):  # auto refuses every backend that fails
        Classifier.load(altered, backend="auto")
    assert isinstance(CanaryMismatch("x"), ModelFormatError)
    assert Classifier.load(altered).predict_array(np.zeros((1, SIZE, SIZE, 3), np.uint8))  # unverified: runs


class SlowInOtherThreads(logging.Handler):
    """Holds the pool's thread inside the log call, between the verdict's assignment and the
    record reaching caplog (the root's handler): the window in which ``settle`` once returned."""

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.3)


def test_verify_true_and_auto_pass_on_a_faithful_file(fp32: Path, caplog, tmp_path: Path, monkeypatch) -> None:
    assert Classifier.load(fp32, verify=True).backend.name == "onnxruntime"
    monkeypatch.setenv("EDGE_INFER_CACHE", str(tmp_path))  # a first auto load: nothing remembered
    caplog.set_level("INFO", logger="edge_infer.classifier")
    slow = SlowInOtherThreads()
    logging.getLogger("edge_infer.classifier").addHandler(slow)
    try:
        clf = Classifier.load(fp32, backend="auto", threads=1)
        chosen = clf.settle()  # waits for the callback's take to finish, log line included
    finally:
        logging.getLogger("edge_infer.classifier").removeHandler(slow)
    assert chosen.startswith(f"auto: {clf.backend.name} (reproduces the {len(read_canaries(fp32))} canaries")
    assert f"{fp32}: {chosen}" in caplog.messages  # the background verdict is logged once, when taken
    assert caplog.messages.count(f"{fp32}: {chosen}") == 1


def test_int8_file_is_judged_against_its_own_and_fp32_probabilities(fp32: Path, pixels, tmp_path) -> None:
    from export.quantize import base_float_nodes, prepare, quantize

    int8, named, prepped = tmp_path / "conv.int8.onnx", tmp_path / "named.onnx", tmp_path / "prepped.onnx"
    model = onnx.load(str(fp32))
    for i, node in enumerate(model.graph.node):  # the quantiser tells nodes apart by name
        node.name = f"{node.op_type}_{i}"
    onnx.save(model, str(named))
    graph = prepare(named, prepped).graph  # as export does: shape inference first, then QDQ
    quantize(prepped, int8, calibration=pixels, keep_float=base_float_nodes(graph))
    tiny_models.save(onnx.load(str(int8)), int8, Classifier.load(fp32).info.replace(precision="int8"))
    tiny_models.add_canaries(int8, pixels, fp32=fp32)
    canaries = read_canaries(int8)
    assert canaries.int8 is not None and not np.array_equal(canaries.int8, canaries.fp32)
    result = verify_cli(int8, "--backend", "onnxruntime", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "int8 file" in result.output and "no confident flip vs fp32 (margin >= 0.2)" in result.output
    assert Classifier.load(int8, verify=True).info.precision == "int8"


def test_canaries_are_the_sensitive_inputs_within_the_budget(fp32: Path, pixels) -> None:
    from edge_infer.agreement import top2_margin
    from export.canaries import MAX_COUNT, budget

    canaries = read_canaries(fp32)
    info = Classifier.load(fp32).info
    assert info.canaries == canaries.summary() and 8 <= info.canaries["count"] == len(canaries) <= MAX_COUNT
    assert info.canaries["bytes"] <= budget(fp32.stat().st_size)  # a test model: the 64 KiB floor
    margins = top2_margin(Classifier.load(fp32).probabilities(pixels))
    stored = top2_margin(canaries.fp32)
    assert stored.min() == pytest.approx(margins.min())  # the nearest tie is among them


def test_a_large_model_keeps_canaries_within_5_percent_of_its_bytes() -> None:
    from export.canaries import select

    pixels = np.random.default_rng(2).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    probs = np.full((len(pixels), 3), 1 / 3, np.float32)
    model_bytes = 2_000_000  # budget 100 kB; random 64 px inputs do not compress (~16 kB each)
    canaries = select(pixels, probs, model_bytes=model_bytes)
    assert 0 < len(canaries) < 16 and len(canaries.to_json()) <= 0.05 * model_bytes


def test_an_old_schema_file_loads_and_verify_says_to_re_export(tmp_path: Path) -> None:
    old = json.loads(tiny_models.colour_info().to_json())
    old["schema"] = 1
    del old["canaries"]
    path = tiny_models.save(tiny_models.colour_graph(), tmp_path / "old.onnx", raw_metadata=json.dumps(old))
    clf = Classifier.load(path)
    assert clf.info.schema == 1 and clf.info.canaries is None and clf.predict_array(
        np.full((1, 32, 32, 3), (255, 0, 0), np.uint8))[0].label == "red"
    result = verify_cli(path)
    assert result.exit_code == 1
    assert "old.onnx has no canaries to verify (it was exported with schema 1" in result.output
    with pytest.raises(NoCanaries, match="re-export it with python -m export"):
        Classifier.load(path, verify=True)


def test_damaged_canaries_are_one_clear_error(fp32: Path, tmp_path: Path) -> None:
    model = onnx.load(str(fp32))
    entry = next(p for p in model.metadata_props if p.key == CANARIES_KEY)
    entry.value = entry.value.replace('"pixels": "', '"pixels": "!!')
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFormatError, match=r"bad.onnx: invalid edge_infer.canaries metadata"):
        Classifier.load(tmp_path / "bad.onnx")


def read_canaries(path: Path) -> Canaries:
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    info = ModelInfo.from_json(meta[METADATA_KEY])
    return Canaries.from_json(meta[CANARIES_KEY], source=str(path), size=info.preprocess.size,
                              classes=len(info.labels))


def test_info_and_bench_say_which_backend_auto_chose_and_why(fp32: Path, tmp_path: Path) -> None:
    from PIL import Image

    result = CliRunner().invoke(cli, ["info", str(fp32), "--backend", "auto"])
    assert result.exit_code == 0, result.output
    n = len(read_canaries(fp32))
    assert f"count: {n}" in result.output  # the canaries row
    backend = next(s for s in result.output.splitlines() if s.startswith("backend"))
    assert f"reproduces the {n} canaries" in backend
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "black.png")
    result = CliRunner().invoke(cli, ["bench", str(fp32), "--images", str(tmp_path), "--runs", "1",
                                      "--warmup", "0", "--backend", "auto", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "chosen       auto: " in result.output and f"reproduces the {n} canaries" in result.output


def test_auto_remembers_a_verified_verdict_per_file_and_refuses_a_changed_one(fp32: Path, altered: Path,
                                                                             tmp_path: Path, monkeypatch) -> None:
    from edge_infer import auto_cache

    monkeypatch.setenv("EDGE_INFER_CACHE", str(tmp_path / "cache"))
    first = Classifier.load(fp32, backend="auto", threads=1)
    first.settle()  # the verdict is stored once it is reached
    again = Classifier.load(fp32, backend="auto", threads=1)
    assert "remembered" not in first.chosen and again.chosen.startswith(first.chosen)
    assert f"remembered in {tmp_path / 'cache' / 'auto.json'}" in again.chosen
    assert again.backend.name == first.backend.name and again.settle() == again.chosen  # nothing pending
    assert "remembered" not in Classifier.load(fp32, backend="auto", threads=2).settle()  # threads: in the key
    assert auto_cache.key(str(fp32), threads=1, inference_precision="f32") != auto_cache.key(
        str(altered), threads=1, inference_precision="f32")
    with pytest.raises(CanaryMismatch):  # other contents, another key: verified afresh and refused
        Classifier.load(altered, backend="auto", threads=1)
    monkeypatch.setenv("EDGE_INFER_CACHE", "off")
    assert "remembered" not in Classifier.load(fp32, backend="auto", threads=1).settle()
    assert auto_cache.cache_path() is None


def test_verify_leaves_auto_its_verdict_and_a_failing_file_none(fp32: Path, altered: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    """``edge-infer verify`` times every backend as auto does; the fastest that passes is stored,
    so the next auto load opens only it. A file that fails leaves nothing, and auto refuses it."""
    monkeypatch.setenv("EDGE_INFER_CACHE", str(tmp_path / "cache"))
    result = verify_cli(fp32, "--threads", "1")
    assert result.exit_code == 0, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("auto will use ") and str(tmp_path / "cache" / "auto.json") in last
    clf = Classifier.load(fp32, backend="auto", threads=1)
    assert last == f"auto will use {clf.backend.name} here (remembered in {tmp_path / 'cache' / 'auto.json'})"
    assert "checked by edge-infer verify" in clf.chosen and "remembered in" in clf.chosen
    assert clf.chosen.startswith(f"auto: {clf.backend.name} (reproduces the {len(read_canaries(fp32))} canaries")
    result = verify_cli(altered, "--threads", "1")
    assert result.exit_code == 1 and "auto will use" not in result.output
    with pytest.raises(CanaryMismatch):
        Classifier.load(altered, backend="auto", threads=1)


@pytest.mark.parametrize("slower", ["onnxruntime", "openvino"])
def test_auto_never_picks_a_backend_that_fails_however_fast(fp32: Path, altered: Path, slower: str,
                                                           monkeypatch) -> None:
    """Every backend runs the canaries one at a time, timed. The "openvino" here is the altered
    file on onnxruntime (real wrong answers); the clock is this test's, moved 30 ms a call by the
    slower backend. Faster or slower, the wrong one is refused and onnxruntime chosen."""
    import time
    from concurrent.futures import Future

    from edge_infer.backends import OnnxRuntimeBackend, open_backend, open_onnxruntime
    from edge_infer.classifier import read_model

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    class Timed(OnnxRuntimeBackend):
        def run(self, batch: np.ndarray) -> np.ndarray:
            clock[0] += 0.03 if self.name == slower else 0.0
            return super().run(batch)

    wrong = Timed(open_onnxruntime(str(altered), 1, None))
    wrong.name = "openvino"
    pending: Future = Future()
    pending.set_result(wrong)
    session = open_onnxruntime(str(fp32), 1, None)
    info, canaries = read_model(session, str(fp32))
    monkeypatch.setattr("edge_infer.backends.OnnxRuntimeBackend", Timed)
    choice = open_backend("auto", str(fp32), session, threads=1, inference_precision="f32",
                          canaries=canaries, openvino=pending).final()
    assert choice.backend.name == "onnxruntime" and choice.verified and "openvino refused" in choice.reason
    assert {c.name: c.passed for c in choice.checks} == {"onnxruntime": True, "openvino": False}
    assert {c.name: c.seconds for c in choice.checks} == pytest.approx(
        {"onnxruntime": 0.03 if slower == "onnxruntime" else 0.0, "openvino": 0.03 if slower == "openvino" else 0.0})


def test_auto_answers_on_onnxruntime_while_openvino_still_compiles(fp32: Path) -> None:
    """The first auto load does not wait for OpenVINO's compile: onnxruntime, once it reproduces
    the canaries, runs the file at once, and the verdict follows in the background when the
    compile (here a future this test completes; the "openvino" is the same file on onnxruntime)
    is done, every backend checked and timed."""
    from concurrent.futures import Future

    from edge_infer.backends import OnnxRuntimeBackend, open_backend, open_onnxruntime
    from edge_infer.classifier import read_model

    session = open_onnxruntime(str(fp32), 1, None)
    info, canaries = read_model(session, str(fp32))
    compiling: Future = Future()
    choice = open_backend("auto", str(fp32), session, threads=1, inference_precision="f32",
                          canaries=canaries, openvino=compiling)
    assert choice.backend.name == "onnxruntime" and choice.verified and "for now" in choice.reason
    assert [c.name for c in choice.checks] == ["onnxruntime"] and choice.checks[0].passed
    assert choice.later is not None and not choice.later.done()  # it waits for the compile
    other = OnnxRuntimeBackend(open_onnxruntime(str(fp32), 1, None))
    other.name = "openvino"
    compiling.set_result(other)
    final = choice.final()
    assert final.verified and final.later is None and final.backend.name in ("onnxruntime", "openvino")
    assert [c.name for c in final.checks] == ["onnxruntime", "openvino"] and all(c.passed for c in final.checks)
    assert final.reason.startswith(f"auto: {final.backend.name} (reproduces the {len(canaries)} canaries")

"""``benchmarks/``: the machine description, the photos, the floor, the report and the committed
results, fast; then one real ``python -m benchmarks --quick`` run on a tiny random network (slow, needs torch).

No test times anything against a limit: speed targets live in the benchmark's output.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmarks import floor, machine, report, tuning
from benchmarks.__main__ import main as bench_main
from benchmarks.result import Agreement, BackendAgreement, Floor, Gemm, Result, Row, SweepRow, Throughput, Variant
from benchmarks.variants import available_variants
from edge_infer.bench import Timing

ROOT = Path(__file__).resolve().parents[1]
VARIANT_KEYS = ["fastai", "torch_fp32", "edge_infer_fp32", "edge_infer_int8", "openvino_fp32", "openvino_int8"]
RESULT_KEYS = {"schema", "created", "command", "machine", "settings", "model", "photos", "variants",
               "floor", "backend_agreement", "onnxruntime_sweep", "cold_start", "targets", "latency_verdicts",
               "load_average_after", "seconds"}


# ------------------------------------------------------------------------------------ machine


def test_machine_description_names_the_cpu_and_its_flags() -> None:
    m = machine.describe_machine()
    assert m["cpu_model"] and m["cpu_model"] != ""
    assert m["logical_cpus"] >= 1 and 1 <= m["usable_cpus"] <= m["logical_cpus"]
    assert set(machine.KEY_FLAGS) == set(m["key_flags"])
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"):
        assert isinstance(m["key_flags"][flag], bool)
    assert m["versions"]["onnxruntime"] and m["versions"]["numpy"] and m["versions"]["pillow"]
    json.dumps(m)  # goes into results.json as is


def test_cpu_flags_read_x86_and_arm_blocks() -> None:
    assert machine.cpu_flags({"flags": "sse avx2 avx512_vnni avx2"}) == ["avx2", "avx512_vnni", "sse"]
    assert machine.cpu_flags({"Features": "fp asimd asimddp"}) == ["asimd", "asimddp", "fp"]
    assert machine.cpu_flags({}) == []


def test_summary_line_lists_the_flags_that_matter() -> None:
    m = {"cpu_model": "Test CPU", "usable_cpus": 2, "logical_cpus": 4, "memory_gib": 8.0,
         "key_flags": {"avx2": True, "avx512_vnni": True, "amx_int8": False}}
    line = machine.summary_line(m)
    assert "Test CPU" in line and "avx512_vnni" in line and "amx_int8" not in line


def test_slug_names_the_cpu_and_its_best_int8_isa() -> None:
    assert machine.slug({"cpu_model": "AMD EPYC", "key_flags": {"avx2": True, "avx512_vnni": False}}) == "amd-epyc-avx2"
    assert machine.slug({"cpu_model": "Intel(R) Xeon(R) Processor",
                         "key_flags": {"avx2": True, "avx512_vnni": True, "amx_int8": True}}) == "intel-xeon-processor-amx"
    assert machine.slug(machine.describe_machine())  # never empty


# ------------------------------------------------------------------------------------- images


def test_photos_have_the_asked_sizes_and_are_jpegs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from benchmarks import images

    paths = images.write_photos(tmp_path, {"small": (320, 240), "wide": (400, 225)})
    for name, size in (("small", (320, 240)), ("wide", (400, 225))):
        with Image.open(paths[name]) as img:
            assert img.format == "JPEG" and img.size == size


def test_crops_make_a_two_class_folder(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from benchmarks import images

    crops = images.write_crops(tmp_path, 2, size=(64, 48))
    assert sorted(crops) == ["china", "flower"]
    assert all(len(v) == 2 and all(p.parent.name == k for p in v) for k, v in crops.items())
    copies = images.write_copies(crops["china"][0], tmp_path / "copies", 3)
    assert len({p.read_bytes() for p in copies}) == 1 and len(copies) == 3


def test_photo_jpeg_is_the_photo_write_photos_writes(tmp_path: Path) -> None:
    """One maker: serve_load's and train's JPEGs are the comparison's photos, as bytes."""
    pytest.importorskip("sklearn")
    from benchmarks import images

    written = images.write_photos(tmp_path, {"small": (320, 240)})["small"].read_bytes()
    assert images.photo_jpeg((320, 240)) == written
    assert images.photo_jpeg((320, 240), photo="flower", seed=1) != written
    with Image.open(io.BytesIO(written)) as img:
        assert img.format == "JPEG" and img.size == (320, 240)


# ------------------------------------------------------------------ onnxruntime settings, floor


def test_session_sweep_times_the_default_and_the_two_alternatives(colour_model: Path) -> None:
    rows = tuning.sweep(colour_model, (32, 32), (1, 2), runs=3, warmup=1, log=lambda m: None)
    assert [r.label for r in rows] == ["threads=1 (Classifier default)", "threads=1, io_binding=True",
                                       "threads=2 (Classifier default)", "threads=2, spinning=False",
                                       "threads=2, io_binding=True"]
    assert all(r.timing.runs == 3 and r.timing.p50_ms > 0 for r in rows)


@pytest.mark.parametrize("io_binding", [False, True])
def test_run_function_gives_the_same_probabilities(colour_model: Path, io_binding: bool) -> None:
    session = tuning.open_session(colour_model, tuning.SessionSetting(1, io_binding=io_binding))
    pixels = np.zeros((1, 32, 32, 3), np.uint8)
    pixels[..., 0] = 255
    out = tuning.run_function(session, pixels, io_binding)()
    probs = out[0] if not io_binding else session.run(["probabilities"], {"image": pixels})[0]
    assert int(np.argmax(probs)) == 0


def test_count_macs_adds_up_convolutions_and_the_linear_layer(tmp_path: Path) -> None:
    from test_backends import conv_model_file

    path = conv_model_file(tmp_path / "conv.onnx", size=64, classes=6)
    # conv1: 16 x 32 x 32 outputs of 3x3x3; conv2: 32 x 16 x 16 of 3x3x16; linear 32 -> 6
    assert floor.count_macs(path) == 16 * 32 * 32 * 27 + 32 * 16 * 16 * 144 + 6 * 32


@pytest.mark.parametrize("kind", ["int8", "fp32"])
def test_gemm_throughput_measures_a_real_product(kind: str) -> None:
    g = floor.gemm_throughput(kind, 1, n=128, runs=2, warmup=1)
    assert g["kind"] == kind and g["n"] == 128 and g["best_ms"] > 0
    assert g["gmac_per_s"] == pytest.approx(128 ** 3 / (g["best_ms"] / 1000) / 1e9, rel=0.01)



# ------------------------------------------------------------------------------------- report


def _timing(p50: float) -> Timing:
    return Timing("t", runs=5, warmup=1, p50_ms=p50, p90_ms=p50 * 1.1, p99_ms=p50 * 1.2, mean_ms=p50,
                  min_ms=p50 * 0.9, max_ms=p50 * 1.3)


def _row(threads: int, model: float | None, e2e: float, folder: float | None = None) -> Row:
    return Row(threads, load_s=0.05, first_call_ms=e2e * 2,
               end_to_end={p: _timing(e2e * k) for p, k in (("640x480", 0.5), ("1920x1080", 1), ("4032x3024", 2))},
               model_only=None if model is None else _timing(model),
               folder=None if folder is None else Throughput(images=64, images_per_s=folder, seconds=64 / folder))


def synthetic_result(arch: str = "resnet34", size: int = 224) -> Result:
    """A result shaped like run_comparison's, with made-up numbers."""
    variants = [
        ("fastai", "fastai learn.predict", [_row(1, None, 150.0), _row(2, None, 100.0)]),
        ("torch_fp32", "PyTorch eager fp32", [_row(1, 40.0, 50.0), _row(2, 25.0, 30.0)]),
        ("edge_infer_fp32", "edge_infer fp32", [_row(1, 20.0, 25.0, 40.0), _row(2, 11.0, 16.0, 70.0)]),
        ("edge_infer_int8", "edge_infer int8", [_row(1, 7.7, 11.0, 80.0), _row(2, 4.0, 9.0, 120.0)]),
        ("openvino_int8", "edge_infer OpenVINO int8", [_row(1, 8.0, 12.0, 90.0), _row(2, 3.5, 10.0, 160.0)]),
    ]
    floors = {t: {"int8": Gemm("int8", t, 1024, 2.0, gmac_per_s=500 * t, floor_ms=7.0 / t),
                  "fp32": Gemm("fp32", t, 1024, 4.0, gmac_per_s=250 * t, floor_ms=14.0 / t)} for t in (1, 2)}
    best = SweepRow({"threads": 2, "spinning": False, "label": "threads=2, spinning=False"}, _timing(10.0))
    return Result(
        created="2026-01-01T00:00:00+00:00", command="python -m benchmarks --quick", seconds=12.0,
        machine=machine.describe_machine(), load_average_after=[0.1, 0.1, 0.1],
        settings={"runs": 5, "warmup": 1, "quick": True},
        model={"source": "synthetic", "arch": arch, "size": [size, size], "labels": ["a", "b"],
               "fp32_mb": 87.0, "int8_mb": 22.0},
        photos={p: {"path": f"/x/{p}.jpg", "bytes": 1000} for p in ("640x480", "1920x1080", "4032x3024")},
        variants=tuple(Variant(k, t, "onnxruntime", "int8" if k.endswith("int8") else "fp32", tuple(rows),
                               Agreement(images=4, top1_agreement=1.0, max_abs_prob_diff=0.0, reference_margin_min=1.0))
                       for k, t, rows in variants),
        floor=Floor("test", 3.66, floors),
        backend_agreement=(BackendAgreement("openvino_int8", "real photos", images=30, top1_same=29, margin=0.1,
                                            confident=20, confident_same=20, max_abs_prob_diff=0.01),),
        sweep={"fp32": (best,)},
        cold_start={"threads": 2, "photo": "photo-1920x1080.jpg", "import": {"import_s": 0.12},
                    "fp32": {"load_s": 0.2, "first_prediction_s": 0.05, "load_plus_first_s": 0.25},
                    "int8": {"load_s": 0.1, "first_prediction_s": 0.04, "load_plus_first_s": 0.6}},
    )


def test_targets_judge_each_goal_on_its_best_variant_and_thread_count() -> None:
    rows = {t.name: t for t in report.targets(synthetic_result())}
    assert list(rows) == [t.name for t in report.TARGETS] and all(t.reference_model for t in rows.values())
    floor_row = rows["int8 model-only p50 vs the int8 floor"]  # OpenVINO 3.5 ms / 3.5 ms floor at 2 threads
    assert floor_row.measured == 1.0 and floor_row.passed and floor_row.target == "<= 1.25 x"
    assert floor_row.detail == "edge_infer OpenVINO int8, threads=2"
    fp32 = rows["fp32 model-only vs best onnxruntime setting"]
    assert fp32.measured == pytest.approx(1.1) and fp32.passed
    e2e = rows["end-to-end int8 p50, 1920x1080 JPEG"]
    assert e2e.measured == 9.0 and e2e.passed and e2e.detail == "edge_infer int8, threads=2"
    speedup = rows["end-to-end speed-up over learn.predict (1920x1080)"]
    assert speedup.measured == pytest.approx(100 / 9, rel=1e-3) and speedup.passed
    assert rows["end-to-end int8 p50, 4032x3024 JPEG"].measured == 18.0
    assert rows["folder throughput, int8 classify_files (1920x1080)"].measured == 160.0
    agree = rows["backends agree with onnxruntime on confident predictions"]
    assert agree.measured == 1.0 and agree.passed and "20/20" in agree.detail
    assert rows["import edge_infer (fresh interpreter)"].passed
    assert rows["load + first prediction, int8"].passed is False  # 0.6 s > 0.5 s


def test_a_confident_disagreement_fails_the_agreement_target() -> None:
    result = synthetic_result()
    result = replace(result, backend_agreement=(replace(result.backend_agreement[0], confident_same=19),))
    row = next(t for t in report.targets(result) if t.name.startswith("backends agree"))
    assert row.measured == 0.95 and row.passed is False


def test_a_missing_measurement_is_not_a_pass() -> None:
    result = synthetic_result()
    result = replace(result, variants=tuple(v for v in result.variants if v.key != "fastai"), cold_start={})
    rows = {t.name: t for t in report.targets(result)}
    assert rows["end-to-end speed-up over learn.predict (1920x1080)"].passed is None
    assert rows["import edge_infer (fresh interpreter)"].passed is None
    result = replace(result, floor=None, backend_agreement=(), sweep={})
    rows = {t.name: t for t in report.targets(result)}
    for name in ("int8 model-only p50 vs the int8 floor", "backends agree with onnxruntime on confident predictions",
                 "fp32 model-only vs best onnxruntime setting"):
        assert rows[name].passed is None and rows[name].measured is None


def test_targets_say_when_the_model_is_not_the_reference() -> None:
    result = synthetic_result(arch="resnet18", size=32)
    assert not any(t.reference_model for t in report.targets(result))
    assert "indicative only" in report.to_markdown(result)


def test_latency_verdicts_use_the_10_and_20_ms_bands() -> None:
    bands = {(b.variant, b.threads, b.what): b.verdict for b in report.latency_verdicts(synthetic_result())}
    assert bands[("edge_infer int8", 2, "end to end 1920x1080")] == "<= 10 ms"
    assert bands[("edge_infer fp32", 2, "end to end 1920x1080")] == "<= 20 ms"
    assert bands[("fastai learn.predict", 1, "end to end 1920x1080")] == "> 20 ms"


def test_a_result_survives_its_json() -> None:
    result = synthetic_result()
    assert Result.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_write_results_makes_json_markdown_and_png(tmp_path: Path) -> None:
    paths = report.write_results(synthetic_result(), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert len(data["targets"]) == len(report.TARGETS) and data["latency_verdicts"]
    assert data["targets"][0]["pass"] is True and "model_only" not in data["variants"][0]["by_threads"][0]
    md = paths["markdown"].read_text()
    for text in ("## Machine", "## Targets", "| edge_infer int8 | 2 |", "10 ms", "Best fp32 setting found",
                 "## Compute floor", "| 2 | 1000 | 3.50 |", "| openvino_int8 | real photos | 29/30 | 20/20 |"):
        assert text in md
    with Image.open(paths["plot"]) as img:
        assert img.format == "PNG" and img.width > 300


COMMITTED = sorted((ROOT / "benchmarks" / "results").glob("*/results.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_a_committed_result_is_judged_and_rendered_as_when_it_was_written(path: Path, tmp_path: Path) -> None:
    """Every results.json under benchmarks/results reads back; the targets it was judged on are
    judged the same again, and a file written by this report's format renders the same report
    (its sections up to the ones this version no longer measures)."""
    data = json.loads(path.read_text())
    result = Result.from_dict(data)
    stored = {t["name"]: t for t in data["targets"]}
    again = {t.name: t for t in report.targets(result)}
    for name in stored.keys() & again.keys():
        assert (again[name].measured, again[name].passed) == (stored[name]["measured"], stored[name]["pass"]), name
    written = report.write_results(result, tmp_path, plot=False)
    assert set(data) <= set(json.loads(written["json"].read_text()))  # no key dropped
    old, new = (path.parent / "results.md").read_text(), written["markdown"].read_text()
    if list(stored) == list(again):  # judged by today's targets: same report
        cut = "\n## Decode paths"
        assert new.split(cut)[0] == old.split(cut)[0]
    assert "## Targets" in new and "## Latency (ms) and throughput" in new


# ---------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --run RUN and --random-weights"),
    (["--random-weights", "--threads", "0"], "thread counts must be >= 1"),
    (["--random-weights", "--threads", "a,b"], "comma-separated list of ints"),
    (["--random-weights", "--variants", "tensorflow"], "unknown variant"),
])
def test_cli_refuses_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(bench_main, args)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.slow
@pytest.mark.torch
def test_quick_benchmark_on_a_tiny_network_writes_every_variant(tmp_path: Path) -> None:
    """The real thing, end to end, on a random resnet18 at 32 px (about a minute on 2 cores)."""
    pytest.importorskip("fastai")
    pytest.importorskip("sklearn")
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--random-weights", "--arch", "resnet18",
                           "--size", "32", "--quick", "--threads", "1,2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(data)
    assert [v["key"] for v in data["variants"]] == list(available_variants())
    assert set(available_variants()) <= set(VARIANT_KEYS)
    for v in data["variants"]:
        assert [r["threads"] for r in v["by_threads"]] == [1, 2]
        assert v["agreement"]["top1_agreement"] >= 0.0
        for r in v["by_threads"]:
            assert set(r["end_to_end"]) == {"640x480", "1920x1080", "4032x3024"}
            assert ("model_only" in r) == (v["key"] != "fastai")
            assert ("folder" in r) == (v["key"] not in ("fastai", "torch_fp32"))
    assert data["variants"][1]["agreement"]["top1_agreement"] == 1.0  # torch against itself
    assert set(data["onnxruntime_sweep"]["best"]) == {"fp32"}
    assert data["cold_start"]["import"]["torch_imported"] is False
    assert len(data["targets"]) == len(report.TARGETS) and not data["targets"][0]["reference_model"]
    assert set(data["floor"]["by_threads"]) == {"1", "2"} and data["floor"]["model_gmac"] > 0
    for row in data["backend_agreement"]:
        assert row["confident_same"] == row["confident"], row
    assert data["machine"]["key_flags"] and data["model"]["arch"] == "resnet18"
    assert "| edge_infer int8 |" in (out / "results.md").read_text()
    with Image.open(out / "latency.png") as img:
        assert img.format == "PNG"

"""``edge-infer bench`` and ``edge_infer.bench.run_benchmark`` on folders with bad files (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_infer.bench import run_benchmark
from edge_infer.cli import cli
from edge_infer.errors import EdgeInferError


@pytest.fixture
def mixed_folder(tmp_path: Path, colour_images) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "0-broken.jpg").write_text("not a jpeg")  # sorts first: the run used to stop here
    for path in colour_images.values():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "cut.jpg").write_bytes(colour_images["red"].read_bytes()[:40])
    return folder


def test_bench_skips_bad_files_names_them_and_exits_1(colour_model: Path, mixed_folder: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", str(colour_model), "--images", str(mixed_folder),
                                      "--runs", "2", "--warmup", "0", "--threads", "1"])
    assert result.exit_code == 1
    assert f"{mixed_folder / '0-broken.jpg'}: not an image" in result.output
    assert f"{mixed_folder / 'cut.jpg'}:" in result.output
    assert "model only (batch 1)" in result.output and "(5 images)" in result.output
    assert "2 images failed and were left out" in result.output


def test_run_benchmark_times_only_the_good_images(colour_model: Path, mixed_folder: Path) -> None:
    files = sorted(str(p) for p in mixed_folder.iterdir())
    result = run_benchmark(colour_model, images={"folder": files}, runs=2, warmup=0, threads=1)
    assert len(result.skipped) == 2 and result.end_to_end[0].runs == 2
    assert result.agreement is None  # onnxruntime is its own reference
    assert result.to_dict()["skipped"] == list(result.skipped)


def test_run_benchmark_with_no_good_image_says_so(colour_model: Path, tmp_path: Path) -> None:
    bad = [tmp_path / "bad.jpg", tmp_path / "empty.png"]
    bad[0].write_text("nope")
    bad[1].write_bytes(b"")
    with pytest.raises(EdgeInferError, match=r"none of the 2 images could be decoded \(first: .*bad\.jpg: not an image"):
        run_benchmark(colour_model, images={"x": [str(p) for p in bad]}, runs=1, warmup=0, threads=1)

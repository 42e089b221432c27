"""``python -m demo`` (demo/pipeline.py): its steps one by one (fast), then the whole demo in ``--quick``
mode (slow, needs torch): dataset -> train -> export -> benchmark -> predict -> summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from demo import pipeline as demo

ROOT = Path(__file__).resolve().parents[1]


def test_the_dataset_step_writes_class_folders_of_images(tmp_path: Path) -> None:
    from train.datasets import FASHION_MNIST

    if not FASHION_MNIST.is_dir():
        pytest.importorskip("sklearn")  # the digits fallback
    data, held_out, name = demo.write_dataset(tmp_path, demo.QUICK)
    assert name in ("fashion-mnist", "digits")
    classes = sorted(p for p in data.iterdir() if p.is_dir())
    assert len(classes) == 10
    assert all(len(list(c.glob("*.png"))) == demo.QUICK.per_class for c in classes)
    assert len(sorted(held_out.rglob("*.png"))) == 10 * demo.QUICK.held_out_per_class


def test_the_output_folder_of_an_earlier_demo_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo.prepare_out(out)
    (out / "old.txt").write_text("from the last demo")
    demo.prepare_out(out)
    assert not (out / "old.txt").exists() and (out / demo.MARKER).is_file()


def test_a_folder_that_is_not_a_demo_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "precious.jpg").write_bytes(b"x")
    with pytest.raises(click.ClickException, match="not an earlier demo"):
        demo.prepare_out(tmp_path)
    assert (tmp_path / "precious.jpg").exists()


@pytest.mark.parametrize("cached, allow, expected, said", [
    (Path("/cache/resnet34.pth"), False, True, "found in the torch hub cache"),
    (None, True, True, "--pretrained: downloading"),
    (None, False, False, "training from random weights (--no-pretrained)"),
])
def test_pretrained_only_from_the_cache_unless_asked(monkeypatch, capsys, cached, allow, expected, said) -> None:
    monkeypatch.setattr(demo, "cached_weights", lambda arch: cached)
    assert demo.pretrained_choice("resnet34", allow) is expected
    assert said in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.torch
def test_quick_demo_runs_every_step(tmp_path: Path) -> None:
    """Tiny settings (12 images per class, 32 px, 1 epoch, resnet18): checks the plumbing."""
    pytest.importorskip("fastai")
    pytest.importorskip("sklearn")
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "demo", "--quick", "--skip-latency",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / demo.MARKER).read_text())
    assert summary["status"] == "done"
    assert Path(summary["models"]["fp32"]["path"]).is_file()
    # An int8 model is offered (and benchmarked) only if it passed the gate; never a failed one.
    int8 = out / "models" / "model.int8.onnx"
    assert summary["int8_gate"]["passed"] is not None
    assert int8.is_file() == summary["int8_gate"]["passed"] == ("int8" in summary["models"])
    offered = str(int8 if int8.is_file() else out / "models" / "model.onnx")
    assert f"predict {offered} YOUR_IMAGE.png" in done.stdout
    assert (out / "run" / "train.json").is_file()
    assert list(summary["benchmarks"]) == (["trained"] if int8.is_file() else [])
    if int8.is_file():
        assert Path(summary["benchmarks"]["trained"]["markdown"]).is_file()
        assert Path(summary["benchmarks"]["trained"]["plot"]).is_file()
    predictions = [line for line in done.stdout.splitlines() if "/held-out/" in line and "\t" in line]
    assert len(predictions) == 10
    assert "Files under" in done.stdout

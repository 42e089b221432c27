"""``python -m train verify``: broken images are moved aside with a log, never deleted."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastai")

from train.cli import cli  # noqa: E402
from train.datasets import make_data  # noqa: E402
from train.errors import TrainError  # noqa: E402
from train.verify import verify  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def data(tmp_path) -> Path:
    """shapes (4 per class) plus a truncated JPEG, a text file named .jpg and a notes file."""
    root = tmp_path / "data"
    make_data("shapes", root, per_class=4)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = io.BytesIO()
    Image.fromarray(noise).save(full, "JPEG", quality=90)
    (root / "red" / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (root / "green" / "page.jpg").write_text("<html><body>404 Not Found</body></html>")
    (root / "green" / "notes.txt").write_text("not an image, not checked, left alone")
    return root


def test_broken_images_are_quarantined_with_a_log(data):
    report = verify(data, progress=False)
    assert report.checked == 14
    assert sorted(q.path for q in report.quarantined) == ["green/page.jpg", "red/truncated.jpg"]
    for rel in ("red/truncated.jpg", "green/page.jpg"):
        assert not (data / rel).exists()
        assert (data / ".quarantine" / rel).is_file()  # moved, bytes kept
    log = [json.loads(line) for line in (data / ".quarantine" / "log.jsonl").read_text().splitlines()]
    assert {r["path"] for r in log} == {"red/truncated.jpg", "green/page.jpg"}
    assert all(set(r) == {"path", "moved_to", "reason", "time"} and r["reason"] for r in log)
    reasons = {r["path"]: r["reason"] for r in log}
    assert "not an image" in reasons["green/page.jpg"]
    assert reasons["red/truncated.jpg"].startswith("truncated or corrupt image data")
    assert str(data) not in reasons["red/truncated.jpg"]  # the log names the path once, relative
    assert report.counts == {"blue": 4, "green": 4, "red": 4}
    assert (data / "green" / "notes.txt").is_file() and len(list(data.rglob("*.png"))) == 12


def test_second_run_finds_nothing_and_keeps_the_quarantine(data):
    verify(data, progress=False)
    again = verify(data, progress=False)
    assert again.checked == 12 and not again.quarantined
    assert len((data / ".quarantine" / "log.jsonl").read_text().splitlines()) == 2


def test_same_name_quarantined_twice_keeps_both(data):
    verify(data, progress=False)
    (data / "green" / "page.jpg").write_text("another broken download")
    verify(data, progress=False)
    kept = sorted(p.name for p in (data / ".quarantine" / "green").iterdir())
    assert kept == ["page.1.jpg", "page.jpg"]


def test_cli_prints_counts_and_warns_on_imbalance(tmp_path):
    root = tmp_path / "data"
    make_data("shapes", root, per_class=8)
    for p in sorted((root / "red").iterdir())[2:]:
        p.rename(root / "blue" / f"moved-{p.name}")  # blue 14, green 8, red 2
    result = CliRunner().invoke(cli, ["verify", str(root)])
    assert result.exit_code == 0, result.output
    assert "blue   14" in result.output and "red    2" in result.output
    assert "checked 24 images, 0 quarantined" in result.output
    assert "warning: classes are imbalanced: blue has 14 images, red has 2" in result.output


def test_cli_reports_quarantined_files(data):
    result = CliRunner().invoke(cli, ["verify", str(data)])
    assert result.exit_code == 0
    assert "quarantined red/truncated.jpg:" in result.output
    assert "log.jsonl" in result.output and "imbalanced" not in result.output


@pytest.mark.parametrize("make, message", [
    (lambda d: d, "no such folder"),
    (lambda d: (d.mkdir(), d)[1], "no image files"),
])
def test_errors(tmp_path, make, message):
    folder = make(tmp_path / "data")
    with pytest.raises(TrainError, match=message):
        verify(folder, progress=False)
    result = CliRunner().invoke(cli, ["verify", str(folder)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output

"""``python -m train verify``: broken images are moved aside through the journal, never deleted,
and ``python -m train clean --undo DATA`` puts them back."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("fastai")

from train.cli import cli  # noqa: E402
from train.datasets import make_data  # noqa: E402
from train.errors import TrainError  # noqa: E402
from train.quarantine import Journal  # noqa: E402
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


def snapshot(data: Path) -> dict[str, str]:
    """sha256 of every file under ``data``, hidden ones included, but the journal itself."""
    return {p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file() and p.name != "journal.jsonl"}


def moves(data: Path) -> list[dict]:
    return [r for r in Journal(data).records() if r["op"] == "move"]


def test_broken_images_are_quarantined_and_journalled(data):
    report = verify(data, progress=False)
    assert report.checked == 14
    assert sorted(q.path for q in report.quarantined) == ["green/page.jpg", "red/truncated.jpg"]
    for rel in ("red/truncated.jpg", "green/page.jpg"):
        assert not (data / rel).exists()
        assert (data / ".quarantine" / rel).is_file()  # moved, bytes kept
    log = moves(data)
    assert {(r["src"], r["dst"]) for r in log} == {("red/truncated.jpg", ".quarantine/red/truncated.jpg"),
                                                 ("green/page.jpg", ".quarantine/green/page.jpg")}
    assert all(r["why"] == "verify" and r["reason"] and r["sha256"] for r in log)
    assert len({r["batch"] for r in log}) == 1  # one verify run, one batch
    reasons = {r["src"]: r["reason"] for r in log}
    assert "not an image" in reasons["green/page.jpg"]
    assert reasons["red/truncated.jpg"].startswith("truncated or corrupt image data")
    assert str(data) not in reasons["red/truncated.jpg"]  # the journal names the path once, relative
    assert not (data / ".quarantine" / "log.jsonl").exists()  # the old log is not written any more
    assert report.counts == {"blue": 4, "green": 4, "red": 4}
    assert (data / "green" / "notes.txt").is_file() and len(list(data.rglob("*.png"))) == 12


def test_second_run_finds_nothing_and_keeps_the_quarantine(data):
    verify(data, progress=False)
    again = verify(data, progress=False)
    assert again.checked == 12 and not again.quarantined
    assert len(moves(data)) == 2


def test_same_name_quarantined_twice_keeps_both_with_the_journals_one_clash_rule(data):
    verify(data, progress=False)
    (data / "green" / "page.jpg").write_text("another broken download")
    again = verify(data, progress=False)
    kept = sorted(p.name for p in (data / ".quarantine" / "green").iterdir())
    assert kept == ["page-1.jpg", "page.jpg"]  # x-1: the rule clean's moves use (train.quarantine)
    assert [q.moved_to for q in again.quarantined] == [".quarantine/green/page-1.jpg"]


def test_clean_undo_on_the_data_folder_puts_back_what_verify_moved(data):
    (data / "blue" / "readme.png").write_text("a text file named .png")
    before = snapshot(data)
    assert len(verify(data, progress=False).quarantined) == 3
    assert "blue/readme.png" not in snapshot(data)

    result = CliRunner().invoke(cli, ["clean", str(data), "--undo"])
    assert result.exit_code == 0, result.output
    assert "undo: 3 restored" in result.stdout
    assert "restored .quarantine/blue/readme.png -> blue/readme.png" in result.stdout
    assert snapshot(data) == before  # every byte back where it was
    assert [p.name for p in (data / ".quarantine").iterdir()] == ["journal.jsonl"]  # folders it made: gone
    assert Journal(data).pending() == []
    assert "undo: 0 restored" in CliRunner().invoke(cli, ["clean", str(data), "--undo"]).stdout


def test_undo_notes_an_old_log_and_leaves_it_and_its_files_alone(data):
    """A log.jsonl written by verify before the journal: no checksum, so undo does not act on it."""
    old = data / ".quarantine" / "red" / "old.jpg"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"moved by an older verify")
    log = data / ".quarantine" / "log.jsonl"
    log.write_text('{"path": "red/old.jpg", "moved_to": ".quarantine/red/old.jpg", "reason": "x", '
                   '"time": "2025-01-01T00:00:00+00:00"}\n')
    before = snapshot(data)
    result = CliRunner().invoke(cli, ["clean", str(data), "--undo"])
    assert result.exit_code == 0, result.output
    assert f"note: {log.resolve()}: written by an older train verify, not read by undo" in result.stderr
    assert snapshot(data) == before


def test_undo_refuses_a_folder_that_is_neither_a_run_nor_a_data_folder(tmp_path):
    result = CliRunner().invoke(cli, ["clean", str(tmp_path), "--undo"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"Error: {tmp_path}: neither a run folder (no train.json) nor a data "
                             "folder with a .quarantine/ folder; nothing to undo\n")


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
    assert f"journal: {data / '.quarantine' / 'journal.jsonl'}; undo: python -m train clean --undo {data}" \
        in result.output and "imbalanced" not in result.output


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

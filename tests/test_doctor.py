"""The training doctor on synthetic histories: one per rule of the course (no torch)."""

from __future__ import annotations

import csv
import json
import math

import pytest
from run_folders import write_run

from export.run_folder import RunFolderError
from train.doctor import HISTORY_COLUMNS, diagnose, read_history, write_report


def history(*epochs: tuple[float, float, float], stage: int = 2, lr: float = 1e-3) -> list[dict]:
    """Rows from (train_loss, valid_loss, error_rate) triples."""
    return [{"stage": stage, "epoch": i, "train_loss": t, "valid_loss": v, "error_rate": e,
             "accuracy": 1 - e, "lr": lr, "seconds": 1.0} for i, (t, v, e) in enumerate(epochs)]


CASES = {
    # name: (history, expected verdict, every expected finding code)
    "nan loss": (history((2.0, 1.5, 0.6), (math.nan, math.nan, 0.9)), "lr_too_high", {"lr_too_high"}),
    "valid far above train in epoch 1": (history((2.78, 8.66, 0.82)), "lr_too_high", {"lr_too_high"}),
    "valid far above train in every epoch": (
        history((2.5, 9.0, 0.80), (2.2, 8.0, 0.78)), "lr_too_high", {"lr_too_high"}),
    # Fashion-MNIST from random weights (this repo, 2.8.12): BatchNorm statistics settle after epoch 1
    "first-epoch spike that recovers": (
        history((2.415, 12.489, 0.885), (1.653, 1.237, 0.365), (0.9, 0.6, 0.2)),
        "underfitting", {"underfitting"}),
    "valid rising from the start": (
        history((1.2, 1.0, 0.40), (1.1, 1.6, 0.45), (1.0, 2.5, 0.50)), "lr_too_high", {"lr_too_high"}),
    "train above valid, error improving": (
        history((1.9, 1.2, 0.40), (1.5, 0.9, 0.30), (1.2, 0.7, 0.22)), "underfitting", {"underfitting"}),
    "a single epoch, train above valid": (history((1.9, 1.2, 0.40)), "underfitting", {"underfitting"}),
    "error improved then got worse": (
        history((1.0, 0.8, 0.30), (0.5, 0.5, 0.10), (0.2, 0.6, 0.12), (0.05, 0.9, 0.15)),
        "overfitting", {"overfitting"}),
    "train below valid, error flat": (
        history((0.8, 0.6, 0.20), (0.3, 0.4, 0.10), (0.1, 0.45, 0.10)),
        "converged", {"converged", "train_below_valid"}),
    "train below valid, error still falling": (
        history((0.8, 0.6, 0.20), (0.3, 0.4, 0.10), (0.1, 0.35, 0.08)),
        "still_improving", {"still_improving", "train_below_valid"}),
    "train above valid but error flat (dropout)": (
        history((0.9, 0.5, 0.10), (0.8, 0.45, 0.10)), "converged", {"converged"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rules(name):
    rows, verdict, codes = CASES[name]
    d = diagnose(rows)
    assert d.verdict == verdict
    assert {f.code for f in d.findings} == codes
    assert all(f.message and f.advice for f in d.findings)


def test_train_below_valid_alone_is_not_overfitting():
    """The course's point, stated in the report: a growing train/valid gap with a steady error."""
    rows = history((0.5, 0.5, 0.10), (0.2, 0.5, 0.09), (0.05, 0.6, 0.09))
    d = diagnose(rows)
    assert "overfitting" not in {f.code for f in d.findings}
    note = next(f for f in d.findings if f.code == "train_below_valid")
    assert "NOT overfitting" in note.message


def test_overfitting_advice_names_the_best_epoch():
    rows = history((1.0, 0.8, 0.30), (0.5, 0.5, 0.10), (0.2, 0.6, 0.12), (0.05, 0.9, 0.15))
    finding = diagnose(rows).findings[0]
    assert "stage 2 epoch 1" in finding.message and "--epochs 2" in finding.advice


def test_lr_too_high_suggests_a_lower_lr():
    finding = diagnose(history((2.78, 8.66, 0.82), lr=0.1)).findings[0]
    assert "--lr 1.0e-02" in finding.advice and "lr-find" in finding.advice


def test_noise_below_tolerance_is_not_overfitting():
    rows = history((1.0, 0.8, 0.30), (0.5, 0.5, 0.100), (0.3, 0.5, 0.102))
    assert diagnose(rows).verdict != "overfitting"


def test_stages_are_read_in_order():
    """A frozen stage then an unfrozen one: the error across both decides."""
    rows = history((1.0, 0.6, 0.2), stage=1) + history((0.5, 0.4, 0.12), (0.2, 0.45, 0.15))
    d = diagnose(rows)
    assert d.verdict == "overfitting" and "stage 2 epoch 0" in d.findings[0].message


def test_empty_history_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        diagnose([])


def write_csv(path, rows, columns=HISTORY_COLUMNS):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def test_write_report_round_trip(tmp_path):
    write_csv(tmp_path / "history.csv", CASES["error improved then got worse"][0])
    d = write_report(tmp_path)
    saved = json.loads((tmp_path / "doctor.json").read_text())
    assert saved["verdict"] == d.verdict == "overfitting"
    assert saved["findings"][0]["advice"]
    assert (tmp_path / "doctor.md").read_text().startswith("# Training doctor: overfitting")


def test_read_history_names_missing_columns(tmp_path):
    write_csv(tmp_path / "history.csv", history((1.0, 0.5, 0.1)), columns=("epoch", "train_loss"))
    with pytest.raises(ValueError, match=r"history\.csv: missing column"):
        read_history(tmp_path / "history.csv")


def test_read_history_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="history.csv: no such file"):
        read_history(tmp_path / "history.csv")


def test_underfitting_with_augmentation_suggests_no_augment():
    rows = CASES["train above valid, error improving"][0]
    assert "--no-augment" in diagnose(rows, augment=True).findings[0].advice
    assert "augment" not in diagnose(rows, augment=False).findings[0].advice
    assert "augment" not in diagnose(rows).findings[0].advice  # not known: say nothing about it


def test_overfitting_without_augmentation_suggests_augment():
    rows = CASES["error improved then got worse"][0]
    assert "(--augment)" in diagnose(rows, augment=False).findings[0].advice
    assert "(--augment)" not in diagnose(rows, augment=True).findings[0].advice


def write_train_json(run, augment: str) -> None:
    """A real train.json whose options.augment is true, false, absent (a run from before the
    option) or that has no train.json at all ("none")."""
    if augment == "none":
        return
    info = write_run(run, run, [("a/1.png", "a", "train"), ("b/1.png", "b", "valid")],
                     augment=augment == "true").to_dict()
    if augment == "absent":
        del info["options"]["augment"]
    (run / "train.json").write_text(json.dumps(info))


@pytest.mark.parametrize("augment, expected", [
    ("true", True), ("false", False), ("absent", None), ("none", None)])
def test_write_report_reads_augment_from_train_json(tmp_path, augment, expected):
    write_csv(tmp_path / "history.csv", CASES["train above valid, error improving"][0])
    write_train_json(tmp_path, augment)
    advice = write_report(tmp_path).findings[0].advice
    assert ("--no-augment" in advice) is (expected is True)


def test_a_damaged_train_json_is_one_line_naming_it(tmp_path):
    write_csv(tmp_path / "history.csv", CASES["train above valid, error improving"][0])
    write_train_json(tmp_path, "true")
    info = json.loads((tmp_path / "train.json").read_text())
    info["options"]["augment"] = "yes"
    (tmp_path / "train.json").write_text(json.dumps(info))
    with pytest.raises(RunFolderError) as e:
        write_report(tmp_path)
    assert str(e.value) == (f"{tmp_path / 'train.json'}: invalid 'options' "
                            "(augment must be true, false or null, got 'yes')")

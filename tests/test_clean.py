"""`python -m train clean`: journalled moves, undo byte for byte, and the CSV route (CliRunner).

Every test works on real files in a temporary data folder (tests/test_clean_fixtures.py); no
training, no mocks. A failure is injected by the file system itself (a regular file where the
quarantine needs a folder) to show that the journal line is on disk before the move.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_clean_fixtures import LABELS, folders, make_run, run_folder, snapshot  # noqa: F401

from export.run_folder import RunFolder
from export.train_config import TrainConfig
from train.clean import CleanError, Decision, Journal, apply_decisions, load_items
from train.clean.cli import clean
from train.data import find_items

pytestmark = pytest.mark.torch  # train.data (fastai) says what an image of the data set is

# (layout, image to relabel to "bird", where it lands)
RELABEL = {
    "folders": ("cat/cat1.png", "bird/cat1.png"),
    "train-valid": ("valid/cat/cat0.png", "valid/bird/cat0.png"),  # valid/bird/ does not exist yet
    "csv": ("images/cat1.png", "images/cat1.png"),
    "csv-crlf": ("images/cat1.png", "images/cat1.png"),
}
DELETE = {"folders": "dog/dog2.png", "train-valid": "train/dog/dog2.png", "csv": "images/dog2.png",
          "csv-crlf": "images/dog2.png"}


def labels_now(data: Path) -> dict[str, str]:
    df, _ = find_items(data)
    return dict(zip(df["path"], df["label"], strict=True))


@pytest.mark.parametrize("layout", list(RELABEL))
def test_relabel_and_delete_then_undo_restores_every_byte(tmp_path, layout):
    r = make_run(tmp_path, layout)
    before, dirs_before = snapshot(r.data), folders(r.data)
    csv_before = (r.data / "labels.csv").read_bytes().splitlines(True) if layout.startswith("csv") else []
    src, dst = RELABEL[layout]
    keep = next(p for p in r.ranked if p not in (src, DELETE[layout]))
    report = apply_decisions(RunFolder.load(r.folder), [
        Decision(src, "relabel", "bird"), Decision(DELETE[layout], "delete"), Decision(keep, "keep")])
    assert (len(report.relabelled), len(report.deleted)) == (1, 1)

    # what the next `fit` sees: the new label, and no quarantined file
    now = labels_now(r.data)
    assert now[dst] == "bird"
    assert DELETE[layout] not in now
    assert len(now) == len(r.labels) - 1
    assert (r.data / ".quarantine" / DELETE[layout]).read_bytes() and not (r.data / DELETE[layout]).exists()
    if layout.startswith("csv"):  # only the relabelled row changed, its line ending kept
        after = (r.data / "labels.csv").read_bytes().splitlines(True)
        changed = [(a, b) for a, b in zip(csv_before, after, strict=True) if a != b]
        end = b"\r\n" if layout == "csv-crlf" else b"\n"
        assert changed == [(f"{src},cat,False".encode() + end, f"{src},bird,False".encode() + end)]

    journal = Journal(r.data)
    relabel_record = ("csv", None) if layout.startswith("csv") else ("move", "relabel")
    assert [(rec["op"], rec.get("why")) for rec in journal.records()] == [relabel_record, ("move", "delete")]
    assert journal.path == r.data / ".quarantine" / "journal.jsonl"

    undone = journal.undo()
    assert len(undone.restored) == 2 and not undone.skipped
    assert snapshot(r.data) == before
    assert folders(r.data) == dirs_before | {".quarantine"}  # folders the moves made are gone
    assert journal.pending() == []
    assert [rec["undoes"] for rec in journal.records() if rec["op"] == "undo"] == [2, 1]
    assert journal.undo().restored == []  # a second undo has nothing left to do


def test_collisions_get_a_suffix_and_nothing_is_overwritten(run_folder):
    r = run_folder
    (r.data / "dog" / "cat0.png").write_bytes((r.data / "dog" / "dog0.png").read_bytes())
    foreign = r.data / ".quarantine" / "bird" / "bird1.png"  # quarantined earlier by `verify`, say
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"an older quarantined file")
    before = snapshot(r.data)
    report = apply_decisions(RunFolder.load(r.folder), [Decision("cat/cat0.png", "relabel", "dog"),
                                                 Decision("bird/bird1.png", "delete")])
    assert report.relabelled == ["cat/cat0.png -> dog/cat0-1.png"]
    assert report.deleted == ["bird/bird1.png -> .quarantine/bird/bird1-1.png"]
    after = snapshot(r.data)
    assert after["dog/cat0.png"] == before["dog/cat0.png"]
    assert after["dog/cat0-1.png"] == before["cat/cat0.png"]
    assert after[".quarantine/bird/bird1.png"] == before[".quarantine/bird/bird1.png"]
    assert after[".quarantine/bird/bird1-1.png"] == before["bird/bird1.png"]
    assert not Journal(r.data).undo().skipped
    assert snapshot(r.data) == before


def test_the_journal_line_is_on_disk_before_the_file_moves(run_folder):
    r = run_folder
    (r.data / ".quarantine").mkdir()
    (r.data / ".quarantine" / "cat").write_bytes(b"")  # a file where the move needs a folder
    before = snapshot(r.data)
    with pytest.raises(CleanError, match=r"^cat/cat2.png: .*; 0 change\(s\) before it were made"):
        apply_decisions(RunFolder.load(r.folder), [Decision("cat/cat2.png", "delete")])
    [rec] = Journal(r.data).records()
    assert (rec["op"], rec["src"], rec["dst"]) == ("move", "cat/cat2.png", ".quarantine/cat/cat2.png")
    assert rec["sha256"] == before["cat/cat2.png"]
    assert (r.data / "cat" / "cat2.png").is_file()  # the move failed; the journal already had it
    assert Journal(r.data).undo().restored == ["cat/cat2.png (never moved)"]
    assert Journal(r.data).pending() == [] and snapshot(r.data) == before


def test_undo_leaves_a_file_changed_since_in_place(run_folder):
    r = run_folder
    apply_decisions(RunFolder.load(r.folder), [Decision("cat/cat1.png", "delete")])
    moved = r.data / ".quarantine" / "cat" / "cat1.png"
    moved.write_bytes(b"edited by hand since")
    result = CliRunner().invoke(clean, [str(r.folder), "--undo"])
    assert result.exit_code == 1
    assert "changed since it was moved" in result.output
    assert "1 could not be restored" in result.output
    assert moved.read_bytes() == b"edited by hand since" and not (r.data / "cat" / "cat1.png").exists()
    assert len(Journal(r.data).pending()) == 1


def test_ranking_follows_moves_and_drops_quarantined_images(run_folder):
    r = run_folder
    run = RunFolder.load(r.folder)
    items = load_items(run)
    assert [it.path for it in items] == list(r.ranked)
    assert items[0].loss > items[1].loss and items[0].predicted != items[0].label
    first, second = r.ranked[0], r.ranked[1]
    apply_decisions(run, [Decision(first, "relabel", items[0].predicted), Decision(second, "delete")])
    after = load_items(run)
    assert after[0].path == f"{items[0].predicted}/{Path(first).name}"
    assert (after[0].label, after[0].loss) == (items[0].predicted, items[0].loss)
    assert second not in [it.path for it in after] and len(after) == len(items) - 1


# -- the CSV route, through click ------------------------------------------------------------------
def invoke(*args: str):
    return CliRunner().invoke(clean, [str(a) for a in args])


def test_export_writes_the_ranked_list(run_folder, tmp_path):
    out = tmp_path / "ranked.csv"
    result = invoke(run_folder.folder, "--export", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:4] == ["path", "label", "predicted", "loss"]
    assert [row["path"] for row in rows] == list(run_folder.ranked)
    assert [float(row["loss"]) for row in rows] == sorted((float(row["loss"]) for row in rows), reverse=True)
    assert {row["action"] for row in rows} == {"keep"}
    assert invoke(run_folder.folder, "--export", out, "--top", "3").exit_code == 0
    assert len(list(csv.DictReader(out.open()))) == 3


def test_apply_and_undo_from_an_edited_export(run_folder, tmp_path):
    r = run_folder
    before = snapshot(r.data)
    decisions = tmp_path / "decisions.csv"
    assert invoke(r.folder, "--export", decisions).exit_code == 0
    rows = list(csv.DictReader(decisions.open()))
    rows[0].update(action="relabel", label=rows[0]["predicted"])
    rows[1].update(action="delete")
    with decisions.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    result = invoke(r.folder, "--apply", decisions)
    assert result.exit_code == 0, result.output
    assert "1 relabelled, 1 moved to .quarantine/" in result.output
    relabelled = f"{rows[0]['predicted']}/{Path(rows[0]['path']).name}"
    assert f"{rows[0]['path']} -> {relabelled}" in result.output
    now = labels_now(r.data)
    assert now[relabelled] == rows[0]["predicted"]
    assert rows[1]["path"] not in now

    result = invoke(r.folder, "--undo")
    assert result.exit_code == 0, result.output
    assert "undo: 2 restored" in result.output
    assert snapshot(r.data) == before


BAD_ROWS = {  # the row on line 3 -> the message after "Error: decisions.csv "
    "unknown action": ("cat/cat1.png,remove,",
                       "line 3: unknown action 'remove'; expected one of: keep, relabel, delete"),
    "unknown label": ("cat/cat1.png,relabel,cow",
                      "line 3: unknown label 'cow'; expected one of: bird, cat, dog"),
    "relabel without label": ("cat/cat1.png,relabel,", "line 3: relabel needs a label"),
    "not in the data set": ("cat/cat9.png,delete,",
                            "line 3: cat/cat9.png is not an image of the data set now"),
    "leaves the data folder": ("../run/train.json,delete,",
                               "line 3: ../run/train.json: not a path inside the data folder"),
    "hidden folder": (".quarantine/journal.jsonl,delete,",
                      "line 3: .quarantine/journal.jsonl: not a path inside"),
    "twice": ("dog/dog0.png,keep,", "line 3: dog/dog0.png already has a decision (decisions.csv line 2)"),
}


@pytest.mark.parametrize("row,message", list(BAD_ROWS.values()), ids=list(BAD_ROWS))
def test_a_bad_row_is_a_one_line_error_naming_its_line_and_nothing_moves(run_folder, tmp_path, row, message):
    before = snapshot(run_folder.data)
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(f"path,action,label\ndog/dog0.png,delete,\n{row}\nbird/bird2.png,relabel,cat\n")
    result = invoke(run_folder.folder, "--apply", decisions)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: decisions.csv {message}")
    assert result.output.count("\n") == 1
    assert snapshot(run_folder.data) == before
    assert not (run_folder.data / ".quarantine").exists()


def test_a_csv_without_the_columns_says_which(run_folder, tmp_path):
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("file,what\ncat/cat1.png,delete\n")
    result = invoke(run_folder.folder, "--apply", decisions)
    assert result.exit_code == 1
    assert result.output == ("Error: decisions.csv line 1: missing column(s) action, path; "
                             "expected path,action,label\n")


@pytest.mark.parametrize("args", [["--export", "x.csv", "--undo"], ["--apply", "{csv}", "--export", "y.csv"]])
def test_the_modes_are_exclusive(run_folder, tmp_path, args):
    (tmp_path / "d.csv").write_text("path,action\n")
    result = invoke(run_folder.folder, *[a.format(csv=tmp_path / "d.csv") for a in args])
    assert result.exit_code == 2 and "choose one" in result.output


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    result = invoke(tmp_path, "--export", tmp_path / "x.csv")
    assert result.exit_code == 1
    assert "not a run folder, train.json, split.csv missing" in result.output


def test_without_top_losses_every_image_is_listed_without_a_loss(run_folder):
    (run_folder.folder / "top_losses.csv").unlink()
    items = load_items(RunFolder.load(run_folder.folder))
    assert sorted(it.path for it in items) == sorted(run_folder.labels)
    assert all(it.loss is None and it.predicted is None for it in items)
    assert json.loads((run_folder.folder / "train.json").read_text())["layout"] == "folders"


@pytest.mark.slow
def test_fit_interpret_clean_fit_again(tmp_path):
    """The whole loop on real training: the second fit sees the relabel and not the deleted image."""
    from train.fit import fit
    from train.interpret import interpret

    config = TrainConfig(arch="resnet18", pretrained=False, size=32, epochs=1, lr=1e-3, bs=8)
    r = make_run(tmp_path / "made", "folders")  # its data folder; the run folder comes from fit
    run1 = fit(r.data, tmp_path / "run1", config)
    interpret(run1, k=4)
    items = load_items(RunFolder.load(run1))
    assert len(items) == len(r.labels) and all(it.loss is not None for it in items)
    assert items[0].loss >= items[-1].loss
    relabel, delete = items[0], items[1]
    new_label = next(lab for lab in LABELS if lab != relabel.label)
    result = invoke(run1, "--apply", _decisions(tmp_path, [(relabel.path, "relabel", new_label),
                                                         (delete.path, "delete", "")]))
    assert result.exit_code == 0, result.output

    run2 = fit(r.data, tmp_path / "run2", config)
    split = {row["path"]: row["label"] for row in csv.DictReader((run2 / "split.csv").open())}
    assert split[f"{new_label}/{Path(relabel.path).name}"] == new_label
    assert relabel.path not in split and delete.path not in split
    assert len(split) == len(r.labels) - 1


def _decisions(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    out = folder / "decisions.csv"
    out.write_text("path,action,label\n" + "".join(f"{p},{a},{lab}\n" for p, a, lab in rows))
    return out

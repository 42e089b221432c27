"""The run folder contract (export.run_folder): what the writer writes loads back, old folders
still load, the documented example is the real format, and each kind of damage is one line that
names the file and the problem. No training: the folders are written by the same code ``fit``
writes with (``run_folders.write_run``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from run_folders import write_run

from edge_infer.metadata import Preprocess
from export.run_folder import SCHEMA_VERSION, RunFolder, RunFolderError, SplitTable, TrainInfo
from export.train_config import TrainConfig
from train.doctor import HISTORY_COLUMNS

REPO = Path(__file__).resolve().parents[1]
ROWS = [("a/1.png", "a", "train"), ("b/1.png", "b", "train"), ("a/2.png", "a", "valid"), ("b/2.png", "b", "valid")]


@pytest.fixture
def run(tmp_path) -> Path:
    """A good run folder: train.json, split.csv and a data folder holding the images."""
    data = tmp_path / "data"
    for path, _, _ in ROWS:
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        (data / path).write_bytes(b"not decoded here")
    write_run(tmp_path / "run", data, ROWS)
    return tmp_path / "run"


def test_a_written_run_loads_back_as_written(run):
    loaded = RunFolder.load(run)
    assert loaded.info == TrainInfo.from_json((run / "train.json").read_text())
    assert loaded.info.schema == SCHEMA_VERSION and loaded.labels == ("a", "b")
    assert loaded.preprocess == Preprocess(size=(32, 32)) and loaded.info.options.augment is False
    assert loaded.split.paths("valid") == ["a/2.png", "b/2.png"]
    assert loaded.files("train") == [loaded.data / "a/1.png", loaded.data / "b/1.png"]
    assert loaded.info.counts == {"train": {"a": 1, "b": 1}, "valid": {"a": 1, "b": 1}}
    assert json.loads(loaded.info.to_json()) == json.loads((run / "train.json").read_text())


def test_split_csv_round_trips_awkward_paths(tmp_path):
    table = SplitTable.from_rows([("a, b/x.png", "a", "train"), ('q"uote/é.png', "b", "valid")])
    table.write(tmp_path / "split.csv")
    assert SplitTable.read(tmp_path / "split.csv") == table
    assert table.frame().to_dict("list") == {"path": ["a, b/x.png", 'q"uote/é.png'], "label": ["a", "b"],
                                             "split": ["train", "valid"]}


def test_an_old_run_without_schema_or_newer_options_loads(run):
    """Runs written before ``schema``, ``augment``, ``workers`` and ``processes`` existed."""
    info = json.loads((run / "train.json").read_text())
    del info["schema"]
    for key in ("augment", "workers", "processes"):
        del info["options"][key]
    (run / "train.json").write_text(json.dumps(info))
    loaded = RunFolder.load(run)
    assert loaded.info.schema == 1
    assert (loaded.info.options.augment, loaded.info.options.workers, loaded.info.options.processes) == (None, None, 1)


# What fit wrote at first (07a4e29, Nov 2026): no schema; no augment, workers or processes
OLD_TRAIN_JSON = """{
  "data": "%s", "layout": "folders", "labels": ["a", "b"],
  "preprocess": {"size": [64, 48], "resize": "pad", "pad_mode": "zeros", "interpolation": "bilinear",
                 "exif_transpose": true, "background": [255, 255, 255]},
  "options": {"arch": "resnet34", "epochs": 5, "freeze_epochs": 1, "lr": 0.001, "lr_source": "auto (valley)",
              "bs": 64, "valid_pct": 0.2, "seed": 42, "pretrained": true, "weights": null},
  "device": "cuda", "mixed_precision": true,
  "counts": {"train": {"a": 1, "b": 1}, "valid": {"a": 1, "b": 1}},
  "metrics": {"valid_loss": 0.31, "error_rate": 0.09, "accuracy": 0.91},
  "history": [{"stage": 1, "epoch": 0, "train_loss": 0.9, "valid_loss": 0.7, "error_rate": 0.2,
               "accuracy": 0.8, "lr": 0.001, "seconds": 12.0}],
  "versions": {"fastai": "2.8.12", "torch": "2.14.1", "torchvision": "0.29.1", "edge_infer": "0.1.0",
               "python": "3.11.7"},
  "seconds": 75.2
}"""


def test_the_first_train_json_format_still_loads(run):
    """A literal train.json as the first fit wrote it: its options become a TrainConfig with the
    later keys at their "not recorded" defaults and the preprocessing from its own block, and
    writing it back changes none of its keys' values."""
    (run / "train.json").write_text(OLD_TRAIN_JSON % RunFolder.load(run).data)
    options = RunFolder.load(run).info.options
    assert options == TrainConfig(arch="resnet34", size=(64, 48), resize="pad", pad_mode="zeros", bs=64, epochs=5,
                                  lr=0.001, lr_source="auto (valley)")
    assert (options.augment, options.workers, options.processes) == (None, None, 1)
    old = json.loads(OLD_TRAIN_JSON % RunFolder.load(run).data)["options"]
    assert options.to_dict() == {**old, "augment": None, "workers": None, "processes": 1}


def _edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        info = json.loads((run / "train.json").read_text())
        change(info)
        (run / "train.json").write_text(json.dumps(info))
    return apply


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return apply


FIX = "(python -m train fit --out RUN writes one; see docs/run-folder.md)"
DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "no train.json": (lambda run: (run / "train.json").unlink(),
                      f"{{run}}: not a run folder, train.json missing {FIX}"),
    "no split.csv": (lambda run: (run / "split.csv").unlink(), f"{{run}}: not a run folder, split.csv missing {FIX}"),
    "bad JSON": (_write("train.json", '{"data": '), "{run}/train.json: not valid JSON (Expecting value: "),
    "not UTF-8": (_write("train.json", b'{"data": "\xff"}'), "{run}/train.json: not valid JSON (not UTF-8: "),
    "not an object": (_write("train.json", "[1, 2]"), "{run}/train.json: not a JSON object; "),
    "missing keys": (_edit(lambda d: [d.pop("labels"), d.pop("history")]),
                     "{run}/train.json: missing key(s) ['labels', 'history']; see docs/run-folder.md"),
    "newer schema": (_edit(lambda d: d.update(schema=SCHEMA_VERSION + 1)),
                     f"{{run}}/train.json uses run folder schema {SCHEMA_VERSION + 1}, this code reads schema "
                     f"{SCHEMA_VERSION}: update this repository, or train again with it"),
    "schema 0": (_edit(lambda d: d.update(schema=0)), "{run}/train.json: unknown run folder schema 0"),
    "schema as text": (_edit(lambda d: d.update(schema="1")), "{run}/train.json: unknown run folder schema '1'"),
    "one label": (_edit(lambda d: d.update(labels=["a"])),
                  "{run}/train.json: invalid 'labels' (expected at least two unique labels, got ['a'])"),
    "unknown layout": (_edit(lambda d: d.update(layout="flat")),
                       "{run}/train.json: invalid 'layout' ('flat' is not one of ['folders', 'train-valid', 'csv'])"),
    "bad preprocess": (_edit(lambda d: d["preprocess"].update(size=[0, 3])),
                       "{run}/train.json: invalid 'preprocess' (size must be two positive ints"),
    "option missing": (_edit(lambda d: d["options"].pop("bs")),
                       "{run}/train.json: invalid 'options' (missing key(s) ['bs'])"),
    "option of the wrong type": (_edit(lambda d: d["options"].update(epochs=True)),
                                 "{run}/train.json: invalid 'options' (epochs must be an int >= 1, got True)"),
    "option out of range": (_edit(lambda d: d["options"].update(valid_pct=1.5)),
                            "{run}/train.json: invalid 'options' (valid_pct must be between 0 and 1, got 1.5)"),
    "history not rows": (_edit(lambda d: d.update(history=3)),
                         "{run}/train.json: invalid 'history' (expected a list of rows, got 3)"),
    "data folder gone": (_edit(lambda d: d.update(data=str(Path(d["data"]).parent / "gone"))),
                         "{run}/train.json: its data folder {tmp}/gone does not exist"),
    "split.csv columns": (_write("split.csv", "file,class\nx.png,a\n"),
                          "{run}/split.csv: missing column(s) ['label', 'path', 'split']; expected path,label,split"),
    "unknown split": (_write("split.csv", "path,label,split\na/1.png,a,train\nb/1.png,b,test\n"),
                      "{run}/split.csv: line 3: expected a path, a label and a split in ['train', 'valid'], "
                      "got ['b/1.png', 'b', 'test']"),
    "split.csv not UTF-8": (_write("split.csv", b"path,label,split\n\xff.png,a,train\n"),
                            "{run}/split.csv: not a readable UTF-8 CSV ("),
    "label not in train.json": (_write("split.csv", "path,label,split\na/1.png,a,train\nc/1.png,c,valid\n"),
                                "{run}/split.csv: labels ['c'] are not among train.json's ['a', 'b']; "
                                "the run folder is inconsistent, train again"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_each_damage_is_one_line_naming_the_file(run, damage):
    make, expected = DAMAGE[damage]
    make(run)
    with pytest.raises(RunFolderError) as e:
        RunFolder.load(run)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(expected.format(run=run, tmp=run.parent)), message


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "nowhere", "{tmp}/nowhere: no such run folder"),
    (lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt", "{tmp}/f.txt: is a file, not a run folder ("),
])
def test_a_path_that_is_not_a_folder_is_named(tmp_path, make, expected):
    with pytest.raises(RunFolderError, match=f"^{re.escape(expected.format(tmp=tmp_path))}"):
        RunFolder.load(make(tmp_path))


def test_the_learner_is_required_only_when_asked_for(run):
    assert RunFolder.load(run).learner == run / "learner.pkl"
    with pytest.raises(RunFolderError, match=f"^{re.escape(str(run))}: not a run folder, learner.pkl missing"):
        RunFolder.load(run, learner=True)


def docs_example() -> str:
    text = (REPO / "docs" / "run-folder.md").read_text()
    return re.search(r"`train.json` \(every key.*?```json\n(.*?)```", text, re.S).group(1)


def test_the_documented_train_json_is_the_real_format():
    """Parses with TrainInfo, and writing it back gives the same JSON: the example shows every
    key the writer writes, and no other."""
    info = TrainInfo.from_json(docs_example(), source="docs/run-folder.md")
    assert info.to_dict() == json.loads(docs_example())
    assert all(list(row) == list(HISTORY_COLUMNS) for row in info.history)
    assert info.metrics == {k: info.history[-1][k] for k in ("valid_loss", "error_rate", "accuracy")}


def test_reading_a_run_folder_imports_no_training_stack():
    """``clean``, ``doctor`` and the benchmarks read a run without torch, fastai or pandas (a new
    interpreter: this one has them all loaded)."""
    code = ("import sys, export.run_folder\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'fastai', 'pandas', 'matplotlib'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

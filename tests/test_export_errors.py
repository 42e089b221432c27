"""``python -m export`` refuses bad input with one line naming the file, before any slow work.

No training here: each case builds just enough of a run folder to reach the check it tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

pytest.importorskip("fastai")

from run_folders import write_run  # noqa: E402

from export import cli  # noqa: E402

pytestmark = pytest.mark.torch


def run_cli(*args) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        result.exception  # a traceback is a bug, not a message
    return result.exit_code, result.output.strip().splitlines()


def fake_run(folder: Path, *, train_json: str | None = None, change: Callable[[dict], object] | None = None,
             learner: bytes = b"not a pickle") -> Path:
    """A run folder with a real ``train.json`` and ``split.csv`` (written as ``fit`` writes them),
    a data folder, and ``learner`` as ``learner.pkl``. ``change`` edits train.json's dict;
    ``train_json`` replaces its text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "learner.pkl").write_bytes(learner)
    info = write_run(folder, folder / "data", [("a/1.jpg", "a", "train"), ("b/1.jpg", "b", "valid")]).to_dict()
    if change is not None:
        change(info)
    (folder / "train.json").write_text(train_json if train_json is not None else json.dumps(info))
    return folder


@pytest.mark.parametrize("make, expect", [
    (lambda tmp: tmp / "nowhere", "nowhere: no such run folder"),
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "file.txt: is a file, not a run folder"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
     "empty: not a run folder, learner.pkl, train.json, split.csv missing"),
    (lambda tmp: fake_run(tmp / "r", train_json="{oops"), "train.json: not valid JSON"),
    (lambda tmp: fake_run(tmp / "r", change=lambda d: d.pop("preprocess")), "train.json: missing key(s) ['preprocess']"),
    (lambda tmp: fake_run(tmp / "r", change=lambda d: d.update(preprocess={"size": [0, 3]})),
     "train.json: invalid 'preprocess'"),
    (lambda tmp: fake_run(tmp / "r", change=lambda d: d.update(schema=2)), "train.json uses run folder schema 2"),
    (lambda tmp: fake_run(tmp / "r", change=lambda d: d.update(data=str(tmp / "gone"))),
     "/gone does not exist"),
    (lambda tmp: fake_run(tmp / "r"), "learner.pkl: cannot load the fastai learner"),
])
def test_bad_run_folder_is_one_line(tmp_path, make, expect):
    run = make(tmp_path)
    code, lines = run_cli(run, "--out", tmp_path / "m.onnx")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("Error: ") and expect in lines[0]
    assert not (tmp_path / "m.onnx").exists()


def test_split_csv_without_columns_is_named(tmp_path):
    run = fake_run(tmp_path / "r")
    (run / "split.csv").write_text("file,class\nx.jpg,a\n")
    code, lines = run_cli(run, "--out", tmp_path / "m.onnx")
    assert code == 1 and lines == [f"Error: {run / 'split.csv'}: missing column(s) ['label', 'path', 'split']; "
                                   "expected path,label,split"]


@pytest.mark.parametrize("args, expect", [
    (["--out", "model.pt"], "the model file name must end in .onnx"),
    (["--out", "m.onnx", "--opset", "9"], "'--opset': 9 is not in the range 13<=x<=20"),
    (["--out", "m.onnx", "--calib", "0"], "'--calib': 0 is not in the range x>=1"),
])
def test_bad_options_are_refused(tmp_path, args, expect):
    run = fake_run(tmp_path / "r")
    code, lines = run_cli(run, *args)
    assert code in (1, 2) and any(expect in line for line in lines), lines


def test_help_states_the_int8_naming():
    code, lines = run_cli("--help")
    assert code == 0 and "NAME.int8.onnx beside NAME.onnx" in " ".join(" ".join(lines).split())

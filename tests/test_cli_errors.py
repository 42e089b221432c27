"""One error model: every tool's errors share ``EdgeInferError``, and every CLI prints a handled
one the same way: one ``Error: <file>: <problem>`` line on stderr, nothing on stdout, exit 1.

``Error: `` is click's own format (``ClickException``), which usage errors already print, so a
user sees one prefix whichever command failed. Each case is a real bad input through the click
object that the console script or ``python -m`` runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_infer.cli import cli as edge_infer_cli
from edge_infer.errors import EdgeInferError
from export.errors import CheckFailed, ExportError
from export.run_folder import RunFolderError
from train.cli import cli as train_cli
from train.errors import CleanError, TrainError


def one_error_line(command, args: list) -> str:
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def text_file(path: Path) -> Path:
    path.write_text("not what the name says")
    return path


@pytest.mark.parametrize("command, args, expect", [
    (edge_infer_cli, lambda t: ["info", text_file(t / "model.onnx")], "model.onnx: not a valid ONNX model"),
    (train_cli, lambda t: ["verify", t / "nowhere"], "nowhere: no such folder"),
    (train_cli, lambda t: ["download", t / "urls.txt", "--dest", t / "d"], "urls.txt: no such file"),
    (train_cli, lambda t: ["clean", t, "--export", t / "x.csv"], "not a run folder"),
    (train_cli, lambda t: ["clean", t, "--undo"], "nothing to undo"),
], ids=["edge-infer info", "train verify", "train download", "train clean", "train clean --undo"])
def test_every_cli_prints_one_error_line_with_the_one_prefix(tmp_path, command, args, expect):
    assert expect in one_error_line(command, args(tmp_path))


@pytest.mark.torch
def test_the_export_cli_prints_the_same_prefix(tmp_path):
    pytest.importorskip("fastai")
    from export.cli import main

    assert one_error_line(main, [tmp_path / "nowhere", "--out", tmp_path / "m.onnx"]) == \
        f"Error: {tmp_path / 'nowhere'}: no such run folder"


@pytest.mark.parametrize("error", [TrainError, CleanError, ExportError, CheckFailed, RunFolderError])
def test_every_tools_error_is_an_edge_infer_error(error):
    assert issubclass(error, EdgeInferError)


def test_the_old_catches_still_catch():
    """``except TrainError`` catches clean's errors; ``except ValueError`` still catches TrainError."""
    assert issubclass(CleanError, TrainError) and issubclass(TrainError, ValueError)

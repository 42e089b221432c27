"""``python -m train fit`` / ``train.fit.fit`` on tiny generated data (CPU, seconds per run).

Three classes of coloured discs, 12 each, 32x32: enough to check every file of
docs/run-folder.md, both training recipes, interpret and the CLI's errors, not to learn much.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("fastai")

from export.run_folder import RunFolder  # noqa: E402
from export.train_config import TrainConfig  # noqa: E402
from train.cli import cli  # noqa: E402
from train.datasets import make_data  # noqa: E402
from train.errors import TrainError  # noqa: E402
from train.fit import fit  # noqa: E402
from train.learner import build_learner, pretrained_unavailable  # noqa: E402

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[1]
TRAIN_JSON_KEYS = {"schema", "data", "layout", "labels", "preprocess", "options", "device", "mixed_precision",
                   "counts", "metrics", "history", "versions", "seconds"}
OPTION_KEYS = {"arch", "epochs", "freeze_epochs", "lr", "lr_source", "bs", "valid_pct", "seed",
               "pretrained", "weights", "augment", "workers", "processes"}
HISTORY_HEADER = "stage,epoch,train_loss,valid_loss,error_rate,accuracy,lr,seconds"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("shapes") / "data"
    make_data("shapes", data, per_class=12)
    return data


@pytest.fixture(scope="module")
def scratch_run(shapes, tmp_path_factory) -> Path:
    """The CLI, --no-pretrained, a given LR: one stage of one epoch."""
    out = tmp_path_factory.mktemp("runs") / "scratch"
    result = CliRunner().invoke(cli, ["fit", str(shapes), "--out", str(out), "--size", "32",
                                      "--no-pretrained", "--epochs", "1", "--lr", "1e-2"])
    assert result.exit_code == 0, result.output
    assert "--no-pretrained: nothing to freeze" in result.output
    assert "device: cpu" in result.output
    return out


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A state dict saved from a random torchvision resnet18: what --weights takes."""
    import torch
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights_run(shapes, weights_file, tmp_path_factory) -> Path:
    """The API, --weights FILE and lr auto: lr_find, a frozen stage, then the unfrozen one."""
    out = tmp_path_factory.mktemp("runs") / "weights"
    config = TrainConfig(arch="resnet18", size=32, epochs=1, freeze_epochs=1, weights=weights_file)
    assert fit(shapes, out, config) == out.resolve()
    return out


def test_scratch_run_writes_the_documented_files(scratch_run, shapes):
    for name in ("learner.pkl", "train.json", "split.csv", "history.csv", "losses.png",
                 "doctor.md", "doctor.json", "models/stage2.pth"):
        assert (scratch_run / name).is_file(), name
    # a run from random weights has no frozen stage and no LR search
    assert not (scratch_run / "models/stage1.pth").exists()
    assert not (scratch_run / "lr_find.png").exists()
    import torch  # the checkpoint is the model's state dict alone: no optimizer state to triple it
    state = torch.load(scratch_run / "models/stage2.pth", weights_only=True)
    assert "0.0.weight" in state and "opt" not in state and "model" not in state
    info = json.loads((scratch_run / "train.json").read_text())
    assert set(info) == TRAIN_JSON_KEYS and set(info["options"]) == OPTION_KEYS
    assert info["data"] == str(shapes.resolve()) and info["layout"] == "folders"
    assert info["labels"] == ["blue", "green", "red"]
    assert info["preprocess"] == {"size": [32, 32], "resize": "crop", "pad_mode": "reflection",
                                  "interpolation": "bilinear", "exif_transpose": True,
                                  "background": [255, 255, 255]}
    assert info["options"]["pretrained"] is False and info["options"]["lr_source"] == "given"
    assert info["options"]["augment"] is False  # the from-scratch default
    assert info["options"]["lr"] == 0.01 and info["options"]["freeze_epochs"] == 0
    assert info["device"] == "cpu" and info["mixed_precision"] is False
    # the defaults: every core fills the decoded store (training runs no workers), one process
    assert (info["options"]["workers"], info["options"]["processes"]) == (len(os.sched_getaffinity(0)), 1)
    assert sum(info["counts"]["train"].values()) + sum(info["counts"]["valid"].values()) == 36
    assert [r["stage"] for r in info["history"]] == [2]
    assert info["metrics"]["error_rate"] == info["history"][-1]["error_rate"]
    assert set(info["versions"]) == {"fastai", "torch", "torchvision", "edge_infer", "python"}
    # every reader's view (export.run_folder) holds exactly what fit wrote
    loaded = RunFolder.load(scratch_run, learner=True)
    assert loaded.info.to_dict() == info and loaded.split.counts() == info["counts"]


def test_history_and_split_csv(scratch_run, shapes):
    lines = (scratch_run / "history.csv").read_text().splitlines()
    assert lines[0] == HISTORY_HEADER and len(lines) == 2
    split = pd.read_csv(scratch_run / "split.csv")
    assert list(split.columns) == ["path", "label", "split"]
    assert set(split["split"]) == {"train", "valid"} and len(split) == 36
    assert all((shapes / p).is_file() for p in split["path"])
    assert (split["path"].str.split("/").str[0] == split["label"]).all()


def test_doctor_report_matches_history(scratch_run):
    doctor = json.loads((scratch_run / "doctor.json").read_text())
    assert doctor["verdict"] and doctor["findings"]
    assert (scratch_run / "doctor.md").read_text().startswith("# Training doctor")


def test_weights_run_trains_both_stages(weights_run):
    for name in ("models/stage1.pth", "models/stage2.pth", "lr_find.png", "learner.pkl"):
        assert (weights_run / name).is_file(), name
    info = json.loads((weights_run / "train.json").read_text())
    assert [r["stage"] for r in info["history"]] == [1, 2]
    assert info["options"]["lr_source"] == "auto (valley)" and info["options"]["pretrained"] is True
    assert info["options"]["augment"] is True  # the fine-tuning default
    lr = info["options"]["lr"]
    # discriminative LRs: the head's peak halves after unfreezing, as in Learner.fine_tune
    assert [r["lr"] for r in info["history"]] == pytest.approx([lr, lr / 2])
    assert info["options"]["weights"].endswith("resnet18.pth")


def test_weights_are_loaded_into_the_body(weights_run, weights_file):
    """Stage 1 trains the head only, so the saved body still equals the state dict."""
    import torch

    state = torch.load(weights_file, weights_only=True)
    stage1 = torch.load(weights_run / "models/stage1.pth", weights_only=True)
    assert torch.equal(stage1["0.0.weight"], state["conv1.weight"])  # body[0] is conv1
    assert torch.equal(stage1["0.4.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_learner_pickle_predicts(scratch_run, shapes):
    from fastai.vision.all import load_learner

    learn = load_learner(scratch_run / "learner.pkl")
    label, _, probs = learn.predict(shapes / "red" / "2.png")
    assert str(label) in ("blue", "green", "red") and float(probs.sum()) == pytest.approx(1, abs=1e-5)


def test_interpret(scratch_run, shapes):
    result = CliRunner().invoke(cli, ["interpret", str(scratch_run), "--k", "4"])
    assert result.exit_code == 0, result.output
    for name in ("confusion_matrix.png", "most_confused.csv", "top_losses.png", "top_losses.csv"):
        assert (scratch_run / name).is_file(), name
    top = pd.read_csv(scratch_run / "top_losses.csv")
    assert list(top.columns) == ["path", "label", "predicted", "probability", "loss", "split"]
    assert len(top) == 36 and set(top["split"]) == {"train", "valid"}
    assert top["loss"].is_monotonic_decreasing
    assert top["probability"].between(0, 1).all()
    assert all((shapes / p).is_file() for p in top["path"])
    assert list(pd.read_csv(scratch_run / "most_confused.csv").columns) == ["actual", "predicted", "count"]


def test_importing_train_leaves_matplotlibs_backend_alone():
    """A notebook or GUI that chose its backend keeps it after importing train (fresh interpreter:
    this process's backend is whatever earlier tests left)."""
    code = ("import matplotlib; matplotlib.use('svg')\n"
            "import train.fit, train.interpret, train.lr, train.cli\n"
            "print(matplotlib.get_backend())")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "svg"


def test_interpret_gives_the_callers_backend_back(scratch_run):
    """interpret draws fastai's pyplot plots on Agg, then switches back to the caller's backend."""
    import matplotlib.pyplot as plt

    from train.interpret import interpret

    before = plt.get_backend()
    plt.switch_backend("svg")
    try:
        interpret(scratch_run, k=2)
        assert plt.get_backend() == "svg"
    finally:
        plt.switch_backend(before)
    assert (scratch_run / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_doctor_cli_rewrites_the_report(scratch_run):
    (scratch_run / "doctor.md").unlink()
    result = CliRunner().invoke(cli, ["doctor", str(scratch_run)])
    assert result.exit_code == 0 and result.output.startswith("# Training doctor")
    assert (scratch_run / "doctor.md").is_file()


def test_lr_find_cli(shapes, weights_file, tmp_path):
    """With --weights the body is frozen, so the finder's 100 steps take seconds, not minutes."""
    result = CliRunner().invoke(cli, ["lr-find", str(shapes), "--out", str(tmp_path), "--arch",
                                      "resnet18", "--size", "32", "--weights", str(weights_file)])
    assert result.exit_code == 0, result.output
    assert "suggested learning rate (valley):" in result.output
    assert (tmp_path / "lr_find.png").is_file()
    assert not any(shapes.rglob("*.pth"))  # the finder's checkpoint never lands in the data
    # not a terminal: one line in the finder's own unit, not fastai's "Epoch 1/34" bar redraws
    assert re.search(r"^lr_find: \d+ of 100 iterations in [\d.]+ s", result.output, re.M), result.output
    assert "Epoch" not in result.output and "\r" not in result.output


def test_lr_find_from_scratch_suggests_slide(shapes, tmp_path):
    """``--no-pretrained`` takes fastai's ``slide``, not ``valley`` (train/lr.py says why); the
    README's Fashion-MNIST recipe gives ``--lr`` itself, so this is the check of that rule."""
    result = CliRunner().invoke(cli, ["lr-find", str(shapes), "--out", str(tmp_path), "--arch",
                                      "resnet18", "--size", "32", "--no-pretrained"])
    assert result.exit_code == 0, result.output
    assert "suggested learning rate (slide):" in result.output


def test_lr_find_bar_in_a_terminal_counts_iterations(shapes, weights_file, tmp_path, capsys):
    """In a terminal one bar runs over lr_find's iterations, labelled lr_find; fastai's epoch bar
    (which read "Epoch 1/N" for the N epochs lr_find asks fit for) is back afterwards."""
    from train.progress import lr_find_progress

    learn = build_learner(shapes, tmp_path, TrainConfig(arch="resnet18", size=32, weights=weights_file)).learn
    capsys.readouterr()
    with lr_find_progress(learn, 8, terminal=True):
        learn.lr_find(num_it=8, stop_div=False, show_plot=False)  # all 8, whatever the loss does
    out = capsys.readouterr().out
    assert "\rlr_find |" in out and "[8/8 " in out, out[-500:]
    assert "Epoch" not in out
    # the bar clears its line and the closing line takes its place
    assert re.match(r"lr_find: 8 of 8 iterations in [\d.]+ s\n$", out.split("\r")[-1]), out[-200:]
    assert hasattr(learn, "progress") and not hasattr(learn, "lr_find_bar")


@pytest.mark.parametrize("body, augment, expected", [
    ("random", None, False), ("weights", None, True), ("random", True, True), ("weights", False, False)])
def test_augmentation_default_and_override(shapes, weights_file, tmp_path, body, augment, expected):
    """Training batches are augmented when fine-tuning a body and not from scratch, unless told."""
    setup = build_learner(shapes, tmp_path, TrainConfig(arch="resnet18", size=32, pretrained=False,
                                                        weights=weights_file if body == "weights" else None,
                                                        augment=augment))
    names = {type(t).__name__ for t in setup.learn.dls.train.after_batch.fs}
    assert setup.config.augment is expected and ("Flip" in names) is expected, names
    assert "Normalize" in names  # always there, augmented or not


def test_existing_run_is_never_overwritten(scratch_run, shapes):
    before = (scratch_run / "learner.pkl").stat().st_mtime_ns
    with pytest.raises(TrainError, match="already holds a run"):
        fit(shapes, scratch_run, TrainConfig(size=32, pretrained=False, epochs=1, lr=1e-2))
    assert (scratch_run / "learner.pkl").stat().st_mtime_ns == before


def bad_weights(tmp_path: Path) -> dict[str, Path]:
    import torch
    import torchvision

    text = tmp_path / "notes.pth"
    text.write_text("not a state dict")
    r18 = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), r18)
    return {"text": text, "resnet18 for resnet34": r18}


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such folder"),
    (["{one_label}"], "only one label"),
    (["{data}", "--out", "{data}/run"], "inside the data folder"),
    (["{data}", "--weights", "{tmp}/nothing.pth"], "nothing.pth: no such file"),
    (["{data}", "--weights", "{tmp}/notes.pth"], "notes.pth: not a PyTorch state dict"),
    (["{data}", "--weights", "{tmp}/r18.pth"], "r18.pth: not a torchvision resnet34 state dict"),
    (["{data}", "--lr", "fast"], "'auto' or a number"),
    (["{data}", "--resize", "stretch"], "'stretch' is not one of"),
])
def test_fit_cli_errors(args, message, shapes, tmp_path):
    bad_weights(tmp_path)
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    (one / "0.png").write_bytes((shapes / "red" / "2.png").read_bytes())
    fill = {"missing": tmp_path / "missing", "one_label": tmp_path / "one", "data": shapes, "tmp": tmp_path}
    argv = ["fit", *[a.format(**fill) for a in args]]
    # --no-pretrained: a test must never start a download, even where an error is expected first
    for option, value in (("--out", str(tmp_path / "run")), ("--lr", "1e-2"), ("--size", "32"),
                          ("--epochs", "1"), ("--no-pretrained", None)):
        if option not in argv:
            argv += [option] if value is None else [option, value]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "train.json").exists()


def test_offline_message_names_both_ways_out():
    import urllib.error

    message = pretrained_unavailable("resnet34", urllib.error.URLError("[Errno -2] Name or service not known"))
    assert "--no-pretrained" in message and "--weights FILE" in message and "resnet34" in message
    assert "Name or service not known" in message and "\n" not in message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pretrained_download_failure_is_one_line(shapes, tmp_path):
    """The real download path, made to fail at once without touching the network.

    An empty TORCH_HOME forces a download; https_proxy points at a closed local port, so
    torch.hub's urllib request is refused in milliseconds, online or not. A subprocess keeps the
    proxy setting out of this test process (urllib caches its opener).
    """
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "https_proxy": proxy,
           "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    proc = subprocess.run([sys.executable, "-m", "train", "fit", str(shapes), "--out", str(tmp_path / "run"),
                           "--size", "32", "--epochs", "1", "--lr", "1e-2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: cannot download the pretrained resnet34 weights")
    assert "--no-pretrained" in last and "--weights FILE" in last
    assert not (tmp_path / "run" / "train.json").exists()


@pytest.mark.parametrize("command, message", [
    ("interpret", "not a run folder, learner.pkl, train.json, split.csv missing"),
    ("doctor", "history.csv: no such file"),
])
def test_run_commands_on_a_folder_that_is_not_a_run(command, message, tmp_path):
    result = CliRunner().invoke(cli, [command, str(tmp_path)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_log_is_one_line_per_epoch_when_stdout_is_not_a_terminal(shapes, tmp_path):
    """No progress-bar redraws (carriage returns) in a log file; the epoch table as plain lines."""
    proc = subprocess.run([sys.executable, "-m", "train", "fit", str(shapes), "--out", str(tmp_path / "run"),
                           "--arch", "resnet18", "--size", "32", "--epochs", "2", "--no-pretrained",
                           "--lr", "1e-2", "--workers", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stdout and "\r" not in proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["epoch", "train_loss", "valid_loss"])
    assert [line.split()[0] for line in lines[header + 1:header + 3]] == ["0", "1"]
    assert "data loading: decoded store, filled by 1 process;" in proc.stdout
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["options"]["workers"] == 1

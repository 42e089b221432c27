"""``train fit`` under ``torchrun``: fastai's ``distrib_ctx`` with two CPU processes (gloo).

The README's multi-GPU command, on the CPU: two real processes, a real process group, the
tiny ``shapes`` data. The run folder must be complete and written once, by rank 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastai")
pytest.importorskip("accelerate")

from train.datasets import make_data  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {"learner.pkl", "train.json", "split.csv", "history.csv", "losses.png", "doctor.md",
             "doctor.json", "models", "models/stage2.pth"}


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def test_two_cpu_processes_write_one_run_folder(tmp_path):
    data = tmp_path / "shapes"
    make_data("shapes", data, per_class=12)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "train", "fit", str(data),
         "--out", str(out), "--size", "32", "--arch", "resnet18", "--no-pretrained", "--epochs", "2",
         "--lr", "1e-2", "--bs", "4"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p.relative_to(out).as_posix() for p in out.rglob("*")} == RUN_FILES
    info = json.loads((out / "train.json").read_text())
    assert info["options"]["processes"] == 2
    # the whole data set, not one process's shard, is described
    assert sum(sum(c.values()) for c in info["counts"].values()) == 36
    assert len(info["history"]) == 2
    # rank 0 alone reports: one device line, one summary, from two processes
    assert proc.stdout.count("device: cpu") == 1, proc.stdout
    assert proc.stdout.count("done in") == 1, proc.stdout


def test_lr_auto_is_refused_under_torchrun(tmp_path):
    """Each process would run its own lr_find: the message names the way out."""
    data = tmp_path / "shapes"
    make_data("shapes", data, per_class=4)
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, "-m", "train", "fit", str(data), "--out", str(tmp_path / "run"),
                           "--size", "32", "--no-pretrained"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "lr-find" in proc.stderr and "--lr" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()

"""Fashion-MNIST end to end: real images, a real fit, accuracy on a held-out set.

300 training images per class (3,000 PNGs, 28x28 grayscale) from the training IDX file, trained
from random weights (``--arch resnet18 --size 64 --epochs 8 --lr 3e-3 --no-pretrained``), then
100 images per class from the *test* IDX file, never seen in training, classified by the learner
through non-augmented DataLoaders. Floor: 80% held-out accuracy.

Why not the brief's ``--size 64 --epochs 5`` with resnet34: measured here it lands on the floor,
not above it (held-out 79.0% with ``--lr auto`` = lr_find's valley 1e-3; 80.7% with 3e-3 or
1e-2; 81.5% with 3e-3 and ``--bs 32``), and the doctor calls all of them underfitting. With 8
epochs: resnet34 84.6%, resnet18 85.6%; resnet18 is also about twice as fast per epoch. A given
LR skips lr_find (about 100 extra batches); ``--lr auto`` is covered by test_train_fit.py.

Time, measured on the shared 2-core CPU while other engineers' jobs ran (load average about 3,
so inflated), torch with OMP_NUM_THREADS=1 (2 OpenMP threads on 2 busy cores were about 3x
slower): fit 230 s, the whole test 4 minutes; valid accuracy 81.7%, held-out 85.6% (the same
numbers on two runs: the seed fixes the split and the weights).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from conftest import FASHION_MNIST, require

pytest.importorskip("fastai")

from train.datasets import make_data  # noqa: E402
from train.fit import fit  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.torch]
FLOOR = 0.80


def held_out_accuracy(run: Path, data: Path, held_out: Path) -> float:
    """The learner's accuracy on ``held_out`` through non-augmented DataLoaders, in batches.

    The learner reads ``path`` relative to its training folder, so held-out files are given as
    paths relative to it (``../held-out/...``).
    """
    from fastai.vision.all import load_learner

    learn = load_learner(run / "learner.pkl")
    files = sorted(held_out.rglob("*.png"))
    items = pd.DataFrame({"path": [os.path.relpath(f, data) for f in files],
                          "label": [f.parent.name for f in files]})
    probs, targets = learn.get_preds(dl=learn.dls.test_dl(items, with_labels=True))
    return float((probs.argmax(dim=1) == targets).float().mean())


def test_fashion_mnist_fit_reaches_the_floor(tmp_path):
    require(FASHION_MNIST.exists(), "Debian's dataset-fashion-mnist", "apt-get install dataset-fashion-mnist")
    data, held_out = tmp_path / "train", tmp_path / "held-out"
    make_data("fashion-mnist", data, per_class=300)
    make_data("fashion-mnist", held_out, per_class=100, split="test")
    run = fit(data, tmp_path / "run", arch="resnet18", size=64, epochs=8, lr=3e-3, pretrained=False)
    info = json.loads((run / "train.json").read_text())
    assert len(info["history"]) == 8 and info["counts"]["train"]["bag"] + info["counts"]["valid"]["bag"] == 300
    accuracy = held_out_accuracy(run, data, held_out)
    print(f"fit {info['seconds']:.0f} s, valid accuracy {info['metrics']['accuracy']:.3f}, "
          f"held-out accuracy {accuracy:.3f}")
    assert accuracy >= FLOOR, f"held-out accuracy {accuracy:.3f} < {FLOOR}; see {run / 'doctor.md'}"

"""``python -m train make-data``: offline datasets written as DEST/<label>/<i>.png (no torch)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FASHION_MNIST, require
from PIL import Image

from train.cli import cli
from train.datasets import FASHION_LABELS, make_data, read_idx
from train.errors import TrainError


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(f">BBBB{a.ndim}I", 0, 0, 0x08, a.ndim, *a.shape) + a.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_idx(tmp_path, compress):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(a)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    assert np.array_equal(read_idx(path), a)


@pytest.mark.parametrize("raw, message", [
    (b"PK\x03\x04 not idx", "bad magic number"),
    (idx_bytes(np.zeros((2, 3), np.uint8))[:-2], "truncated IDX file"),
])
def test_read_idx_errors(tmp_path, raw, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(TrainError, match=message):
        read_idx(path)


def fake_fashion(root, n_per_class=3):
    """A Fashion-MNIST folder in the Debian layout, each image filled with its label."""
    labels = np.tile(np.arange(10, dtype=np.uint8), n_per_class)
    images = np.repeat(labels[:, None, None] * 20, 28 * 28).reshape(-1, 28, 28)
    root.mkdir()
    for prefix in ("train", "t10k"):
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return root


def test_fashion_mnist_layout(tmp_path):
    counts = make_data("fashion-mnist", tmp_path / "out", per_class=2, root=fake_fashion(tmp_path / "fm"))
    assert counts == {name: 2 for name in FASHION_LABELS}
    # the first two of class 3 (dress) are source images 3 and 13
    assert sorted(p.name for p in (tmp_path / "out" / "dress").iterdir()) == ["13.png", "3.png"]
    img = Image.open(tmp_path / "out" / "dress" / "3.png")
    assert img.size == (28, 28) and np.asarray(img).max() == 60


def test_digits(tmp_path):
    train = make_data("digits", tmp_path / "train", per_class=5)
    test = make_data("digits", tmp_path / "test", per_class=5, split="test")
    assert train == test == {str(d): 5 for d in range(10)}
    assert Image.open(next((tmp_path / "train" / "7").iterdir())).size == (32, 32)
    train_ids = {p.name for p in (tmp_path / "train").rglob("*.png")}
    assert not train_ids & {p.name for p in (tmp_path / "test").rglob("*.png")}  # disjoint


def test_shapes(tmp_path):
    assert make_data("shapes", tmp_path / "s", per_class=4) == {"blue": 4, "green": 4, "red": 4}
    red = np.asarray(Image.open(next((tmp_path / "s" / "red").iterdir())))
    assert red.shape == (40, 40, 3) and (red[..., 0] > 200).sum() > 200


def test_refuses_a_non_empty_dest(tmp_path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "mine.jpg").write_bytes(b"user data")
    result = CliRunner().invoke(cli, ["make-data", "shapes", str(tmp_path / "dest")])
    assert result.exit_code == 1 and "is not an empty folder" in result.output
    assert (tmp_path / "dest" / "mine.jpg").read_bytes() == b"user data"


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(TrainError, match="apt-get install dataset-fashion-mnist"):
        make_data("fashion-mnist", tmp_path / "out", root=tmp_path / "nowhere")


def test_real_fashion_mnist_test_split(tmp_path):
    require(FASHION_MNIST.exists(), "Debian's dataset-fashion-mnist", "apt-get install dataset-fashion-mnist")
    result = CliRunner().invoke(cli, ["make-data", "fashion-mnist", str(tmp_path / "fm"),
                                      "--per-class", "3", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "wrote 30 images in 10 classes" in result.output
    # t10k's first image is an ankle boot (label 9), as in the dataset's documentation
    assert (tmp_path / "fm" / "ankle_boot" / "0.png").is_file()

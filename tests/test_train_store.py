"""The decoded store (train/store.py) and the loader that trains from it (train/loader.py).

Real JPEG/PNG files, real fastai DataLoaders and Learners on the CPU. What must hold:

* validation rows are byte-equal to ``edge_infer.preprocess`` on the original file, for every
  resize and pad mode, EXIF-rotated and CMYK photos included;
* the on-device crop/pad resample is fastai's training ``Resize`` on the same box, within a mean
  of 3 levels (of 255) per image and a max of 32 (on smooth photos, measured 0.4-2.4 mean and
  3-24 max: the image is resampled twice, into its canvas row and then by ``grid_sample``'s two
  taps, where fastai's antialiased bilinear resamples once); a box moved by the position is
  measurably further off;
* a file changed on disk is decoded again; one only touched is not; a warm start decodes nothing;
* a small-image data set (Fashion-MNIST at 32 px) gives the same batches, and trains the same
  weights, as fastai's own item pipeline for the same seed;
* no host sync (``Tensor.item``/``.cpu``/``__bool__``) in our code per training batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_infer.metadata import Preprocess
from edge_infer.preprocess import fit_to_size, load_image
from export.train_config import TrainConfig
from train.store import default_store_dir, open_store, plan_layout

pytest.importorskip("fastai")
pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[1]
MODES = [("crop", "reflection"), ("squish", "reflection"), ("pad", "reflection"), ("pad", "zeros"),
         ("pad", "border")]


def _photo(path: Path, size: tuple[int, int], seed: int = 0, mode: str = "RGB", **save) -> Path:
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert(mode).save(path, **save)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two classes: photos of other aspects, an EXIF-rotated one, a CMYK JPEG, small PNGs."""
    data = tmp_path_factory.mktemp("photos") / "data"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    for c, label in enumerate(("cat", "dog")):
        for i, size in enumerate(((400, 300), (300, 420), (640, 480))):
            _photo(data / label / f"p{i}.jpg", size, seed=10 * c + i, quality=95)
        _photo(data / label / "turned.jpg", (400, 300), seed=20 + c, exif=exif)
        _photo(data / label / "cmyk.jpg", (360, 240), seed=30 + c, mode="CMYK")
        for i in range(3):
            _photo(data / label / f"s{i}.png", (48, 40), seed=100 + 10 * c + i)
    return data


def _paths(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in data.rglob("*.*"))


@pytest.mark.parametrize("resize,pad_mode", MODES)
def test_validation_rows_are_edge_infers_items(photos, tmp_path, resize, pad_mode):
    pre = Preprocess(size=(24, 40), resize=resize, pad_mode=pad_mode)  # not square: h and w kept apart
    paths = _paths(photos)
    store = open_store(photos, paths, pre, "valid", root=tmp_path, workers=2)
    assert store.layout.kind == "valid" and store.decoded == len(paths)
    for i, p in enumerate(paths):
        assert np.array_equal(store.item(i), fit_to_size(load_image(photos / p), pre)), p


@pytest.mark.parametrize("resize,pad_mode", MODES)
def test_validation_batches_equal_fastais_item_pipeline(photos, tmp_path, resize, pad_mode):
    import torch

    from train.data import make_dls

    pre = Preprocess(size=(24, 40), resize=resize, pad_mode=pad_mode)
    batches = []
    for store in (tmp_path / "store", False):
        dls = make_dls(photos, pre, bs=4, augment=False, store=store)
        batches.append(torch.cat([x for x, _ in dls.valid]))
    assert type(dls.valid).__name__ == "TfmdDL"  # store=False: fastai's own loader
    assert torch.equal(*batches)


def _boxes_error(photos: Path, pre: Preprocess, shift: float = 0.0) -> list[tuple[float, float]]:
    """(mean, max) |device resample - fastai Resize| per training photo, same random positions."""
    import torch
    from fastai.vision.all import PadMode, PILImage, Resize, ResizeMethod

    from train.loader import resample, store_batch_grid
    from train.store import make_row

    paths = [p for p in _paths(photos) if p.endswith(".jpg")]
    sizes = np.array([load_image(photos / p).size for p in paths])
    layout = plan_layout(sizes, pre, "train")
    assert layout.kind == "canvas"
    rows = torch.from_numpy(np.stack([make_row(photos / p, layout, pre) for p in paths]))
    pcts = np.random.default_rng(0).random((len(paths), 2))
    grid = torch.from_numpy(store_batch_grid(sizes, pre, True, np.clip(pcts + shift, 0, 0.999)))
    mine = resample(rows.permute(0, 3, 1, 2), grid, pre, torch.device("cpu"))
    fastai_resize = Resize(pre.size, method=getattr(ResizeMethod, pre.resize.capitalize()),
                           pad_mode=getattr(PadMode, pre.pad_mode.capitalize()))
    errors = []
    for k, p in enumerate(paths):
        fastai_resize.pcts = tuple(pcts[k])  # what before_call draws in training
        want = np.asarray(fastai_resize.encodes(PILImage(load_image(photos / p)))).astype(np.float64)
        d = np.abs(mine[k].permute(1, 2, 0).numpy() - want)
        errors.append((float(d.mean()), float(d.max())))
    return errors


@pytest.mark.parametrize("resize,pad_mode", [m for m in MODES if m[0] != "squish"])
def test_device_resize_is_fastais_resize_on_the_same_box(photos, resize, pad_mode):
    pre = Preprocess(size=(24, 40), resize=resize, pad_mode=pad_mode)
    errors = _boxes_error(photos, pre)
    assert max(m for m, _ in errors) <= 3.0
    assert max(x for _, x in errors) <= 32
    if resize == "crop":  # the position is used: another one is measurably further from fastai's
        moved = _boxes_error(photos, pre, shift=0.5)
        assert np.mean([m for m, _ in moved]) > 2 * np.mean([m for m, _ in errors])


def test_changed_files_are_decoded_again_and_touched_ones_are_not(photos, tmp_path):
    pre = Preprocess(size=(32, 32))
    data = tmp_path / "data"
    paths = []
    for i in range(6):
        _photo(data / "a" / f"{i}.jpg", (200, 150), seed=i)
        paths.append(f"a/{i}.jpg")
    assert open_store(data, paths, pre, "train", root=tmp_path / "s", workers=2).decoded == 6
    assert open_store(data, paths, pre, "train", root=tmp_path / "s").decoded == 0  # warm
    st = os.stat(data / paths[0])
    os.utime(data / paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes
    assert open_store(data, paths, pre, "train", root=tmp_path / "s").decoded == 0
    _photo(data / paths[1], (200, 150), seed=99)  # new content, same size and name
    os.utime(data / paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    store = open_store(data, paths, pre, "train", root=tmp_path / "s")
    assert store.decoded == 1
    from train.store import make_row

    assert np.array_equal(store.item(1), make_row(data / paths[1], store.layout, pre))
    assert not np.array_equal(store.item(1), store.item(2))
    assert sorted(data.rglob("*")) == sorted(data.rglob("*"))  # nothing written into the data folder
    assert not list(data.rglob("manifest.json"))


def test_default_store_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_store_dir() == tmp_path / "edge-infer" / "train-store"


def test_layouts(photos):
    """Squish, and crop/pad where every image has the target's aspect, store finished items."""
    sizes = np.array([[28, 28], [28, 28]])
    assert plan_layout(sizes, Preprocess(size=(32, 32)), "train").kind == "finished"
    assert plan_layout(sizes, Preprocess(size=(32, 32), resize="pad"), "train").kind == "finished"
    mixed = np.array([[400, 300], [300, 400]])
    assert plan_layout(mixed, Preprocess(size=(32, 32), resize="squish"), "train").kind == "finished"
    canvas = plan_layout(mixed, Preprocess(size=(32, 32)), "train")
    # the 4:3 crop box is 300 of 400: the canvas keeps 1.1 x 32 pixels across it, both ways
    assert canvas.kind == "canvas" and canvas.shape == (47, 47)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """Fashion-MNIST 28x28 PNGs when Debian's package is there, else generated 28x28 PNGs."""
    from train.datasets import FASHION_MNIST, make_data

    data = tmp_path_factory.mktemp("small") / "data"
    if FASHION_MNIST.exists():
        make_data("fashion-mnist", data, per_class=4)
    else:
        for c, label in enumerate(("a", "b", "c")):
            for i in range(12):
                _photo(data / label / f"{i}.png", (28, 28), seed=10 * c + i, mode="L")
    return data


@pytest.mark.parametrize("augment", [False, True])
def test_small_images_give_fastais_batches(small, tmp_path, augment):
    import torch
    from fastai.vision.all import set_seed

    from train.data import make_dls

    batches = []
    for store in (tmp_path / "store", False):
        set_seed(42)
        dls = make_dls(small, Preprocess(size=(32, 32)), bs=8, augment=augment, store=store)
        batches.append([(x.clone(), y.clone()) for _ in range(2) for x, y in dls.train]
                       + [(x.clone(), y.clone()) for x, y in dls.valid])
    assert type(dls.train).__name__ == "TfmdDL"
    assert len(batches[0]) == len(batches[1]) > 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*batches, strict=True))


def test_small_images_train_the_same_weights(small, tmp_path):
    """The README's Fashion recipe's path (from scratch, no augmentation): same seed, same model."""
    import torch
    from fastai.vision.all import set_seed

    from train.learner import build_learner

    states = []
    for store in (tmp_path / "store", False):
        set_seed(42)
        setup = build_learner(small, tmp_path / "out", TrainConfig(arch="resnet18", size=32, bs=8, pretrained=False,
                                                                   store=store))
        setup.learn.fit_one_cycle(1, 1e-3)
        states.append({k: v.clone() for k, v in setup.learn.model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_no_host_sync_in_our_code_per_batch(photos, tmp_path, monkeypatch):
    """Tensor.item/.cpu/__bool__ called from train/ while training: once per epoch (History), never per batch."""
    import sys

    import torch
    from fastai.vision.all import set_seed

    from train.fit import History
    from train.learner import build_learner

    set_seed(0)
    setup = build_learner(photos, tmp_path / "out", TrainConfig(arch="resnet18", size=32, bs=4, pretrained=False,
                                                                augment=True, store=tmp_path / "store"))
    calls: list[str] = []
    ours = str(REPO / "train")
    for name in ("item", "cpu", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(ours):
                calls.append(f"{_name} from {caller}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    history = History()
    setup.learn.fit(2, 1e-3, cbs=history)
    monkeypatch.undo()
    assert len(history.batches) == 2 * len(setup.learn.dls.train) > 2
    assert calls == [f"cpu from {REPO / 'train' / 'fit.py'}"] * 2, calls


@pytest.mark.slow
def test_a_run_trained_from_the_store_exports_with_parity(photos, tmp_path, monkeypatch):
    """Crop with photos of other aspects: the canvas store and the device resample in training."""
    from export.pipeline import export_run
    from train.fit import fit

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = fit(photos, tmp_path / "run", TrainConfig(arch="resnet18", size=32, epochs=1, lr=1e-2, bs=4,
                                                    pretrained=False, augment=True, seed=42))
    assert list((tmp_path / "cache" / "edge-infer" / "train-store").glob("train-*/images.u8"))
    report = export_run(run, tmp_path / "m.onnx", echo=lambda line: None).to_dict()
    files = report["files"]
    assert files["passed"] and report["tensor"]["passed"]
    assert files["max_prob_diff"] <= 1e-3
    assert files["top1_agreement"] == 1.0 and files["top1_equal"] == files["files"]

"""The reduced-image cache for training (train/image_cache.py) and how make_dls uses it.

Real JPEG/PNG files, real fastai DataLoaders. What must hold: big training images are decoded
once into a reduced copy (content-keyed, refreshed when the file changes); big validation images
are read from their finished validation item, and the validation batches are bit for bit those
of the original files; small images are read as they are, so a small-image data set trains
exactly as without a cache; ``test_dl`` (export's parity) always reads the original file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_infer.metadata import Preprocess
from edge_infer.preprocess import fit_to_size, load_image
from train.image_cache import VERSION, default_cache_dir, needs_reduction, prepare_training_sources

SIZE = (32, 32)


def _photo(path: Path, size: tuple[int, int], seed: int = 0, **save) -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path, **save)
    return path


def test_big_images_are_reduced_once_and_small_ones_pass(tmp_path):
    big = _photo(tmp_path / "big.jpg", (400, 300), quality=95)
    small = _photo(tmp_path / "small.png", (64, 48))  # <= twice 32x32 both ways
    cache = tmp_path / "cache"
    sources, report = prepare_training_sources([big, small], SIZE, root=cache)
    assert (report.big, report.written) == (1, 1)
    assert sources[1] == str(small)
    entry = Path(sources[0])
    assert entry.is_file() and cache in entry.parents
    with Image.open(entry) as img:
        # aspect ratio kept, at least twice the training size both ways, far smaller than the photo
        assert img.size == (85, 64) and img.mode == "RGB"
    again, report = prepare_training_sources([big, small], SIZE, root=cache)
    assert again == sources and report.written == 0


def test_entries_follow_the_content_not_the_name(tmp_path):
    cache = tmp_path / "cache"
    first = _photo(tmp_path / "a.jpg", (400, 300))
    (entry,), _ = prepare_training_sources([first], SIZE, root=cache)
    moved = first.rename(tmp_path / "renamed.jpg")  # what `train clean` does to a relabelled file
    (same,), report = prepare_training_sources([moved], SIZE, root=cache)
    assert same == entry and report.written == 0
    _photo(moved, (400, 300), seed=1)  # the file changes: a new entry, never the stale pixels
    (changed,), report = prepare_training_sources([moved], SIZE, root=cache)
    assert changed != entry and report.written == 1
    decoded = load_image(moved, draft_for=Preprocess(size=SIZE))  # the reduced-scale JPEG decode
    assert np.array_equal(np.asarray(Image.open(changed)),
                          np.asarray(decoded.resize((85, 64), Image.Resampling.LANCZOS)))


def test_exif_rotation_is_applied_before_reducing(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: shown as 300 wide, 400 high
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    (entry,), _ = prepare_training_sources([path], SIZE, root=tmp_path / "cache")
    assert Image.open(entry).size == (64, 85)


@pytest.mark.parametrize("size, big", [((64, 64), False), ((130, 60), False), ((65, 65), True),
                                       ((65, 130), True)])
def test_needs_reduction_from_the_header(tmp_path, size, big):
    assert needs_reduction(_photo(tmp_path / "x.png", size), SIZE) is big


def test_unreadable_files_are_left_to_the_loader(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert needs_reduction(bad, SIZE) is False


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "edge-infer" / "train-images"


# --- make_dls ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Two classes of eight images each: four photos and four small PNGs per class."""
    data = tmp_path_factory.mktemp("mixed") / "data"
    for c, label in enumerate(("cat", "dog")):
        (data / label).mkdir(parents=True)
        for i in range(4):
            _photo(data / label / f"p{i}.jpg", (400, 300), seed=10 * c + i)
            _photo(data / label / f"s{i}.png", (48, 48), seed=100 + 10 * c + i)
    return data


@pytest.mark.torch
def test_make_dls_reads_big_training_images_from_the_cache_only(mixed, tmp_path):
    pytest.importorskip("fastai")
    from train.data import make_dls

    before = sorted(mixed.rglob("*"))
    dls = make_dls(mixed, Preprocess(size=SIZE), bs=4, cache=tmp_path / "cache")
    train, valid = dls.train_ds.items, dls.valid_ds.items
    is_photo = train["path"].str.endswith(".jpg")
    assert train.loc[is_photo, "cached"].map(lambda c: str(tmp_path / "cache") in c).all()
    assert train.loc[~is_photo, "cached"].isna().all()
    valid_photo = valid["path"].str.endswith(".jpg")
    assert valid_photo.any() and (~valid_photo).any()
    assert valid.loc[valid_photo, "cached"].map(lambda c: c.endswith(f"-valid-{VERSION}.ppm")).all()
    assert valid.loc[~valid_photo, "cached"].isna().all()
    assert sorted(mixed.rglob("*")) == before  # nothing written into the data folder
    x, _ = dls.one_batch()
    assert tuple(x.shape[-2:]) == SIZE


@pytest.mark.torch
def test_validation_and_test_dl_pixels_are_still_edge_infers(mixed, tmp_path):
    """What export's parity sees (test_dl) and validation: fastai's Resize on the original file."""
    pytest.importorskip("fastai")
    from train.data import make_dls

    pre = Preprocess(size=SIZE)
    dls = make_dls(mixed, pre, bs=4, augment=False, cache=tmp_path / "cache")
    for table in (dls.train_ds.items, dls.valid_ds.items):  # train rows too: test_dl takes paths
        path = mixed / table["path"].iloc[0]
        x = dls.test_dl([path]).one_batch()[0][0]
        want = fit_to_size(load_image(path), pre)
        assert np.array_equal(x.permute(1, 2, 0).mul(255).round().byte().cpu().numpy(), want)


@pytest.mark.torch
@pytest.mark.parametrize("resize,pad_mode", [("crop", "reflection"), ("squish", "reflection"),
                                             ("pad", "reflection"), ("pad", "zeros")])
def test_cached_validation_batches_equal_the_original_files(mixed, tmp_path, resize, pad_mode):
    """The validation item cache changes where the pixels come from, never the pixels."""
    pytest.importorskip("fastai")
    import torch

    from train.data import make_dls

    pre = Preprocess(size=(24, 40), resize=resize, pad_mode=pad_mode)  # not square: h and w kept apart
    batches = []
    for cache in (tmp_path / "cache", False):
        dls = make_dls(mixed, pre, bs=16, augment=False, cache=cache)
        batches.append(torch.cat([x for x, _ in dls.valid]))
    assert dls.valid_ds.items["path"].str.endswith(".jpg").any()
    assert len(list((tmp_path / "cache").rglob(f"*-valid-{VERSION}.ppm"))) > 0
    assert batches[0].shape[-2:] == (24, 40)
    assert torch.equal(*batches)


@pytest.mark.torch
def test_small_images_train_exactly_as_without_a_cache(tmp_path):
    """Fashion-MNIST-sized data: same items, same batches, cache or not (the README's run)."""
    pytest.importorskip("fastai")
    import torch
    from fastai.vision.all import set_seed

    from train.data import make_dls
    from train.datasets import make_data

    data = tmp_path / "shapes"
    make_data("shapes", data, per_class=8)
    batches = []
    for cache in (tmp_path / "cache", False):
        set_seed(42)
        dls = make_dls(data, Preprocess(size=SIZE), bs=4, cache=cache)
        assert "cached" not in dls.train_ds.items
        batches.append([dls.train.one_batch()[0] for _ in range(2)])
    assert all(torch.equal(a, b) for a, b in zip(*batches))
    assert not (tmp_path / "cache").exists()

"""``fit_to_size`` equals fastai's validation ``Resize`` pixel for pixel (needs fastai).

7 image shapes x 4 target sizes x 3 methods x 3 pad modes = 252 cases, all exactly equal: the
runtime's resize is a port of fastai's ``Resize.encodes`` + ``_do_crop_pad``, not an
approximation. Odd sizes and both aspect directions exercise fastai's ``int()`` truncation.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge_infer.metadata import Preprocess
from edge_infer.preprocess import fit_to_size

pytestmark = pytest.mark.torch

IMAGE_SIZES = [(97, 61), (61, 97), (64, 64), (300, 200), (31, 45), (640, 480), (17, 17)]  # (w, h)
TARGETS = [(32, 32), (24, 40), (40, 24), (224, 224)]  # (h, w), as fastai and Preprocess take them
METHODS = ["crop", "squish", "pad"]
PAD_MODES = ["zeros", "border", "reflection"]


def _image(w: int, h: int) -> Image.Image:
    """Smooth gradients plus noise: every row and column differs, so any offset shows."""
    rng = np.random.default_rng(w * 1000 + h)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) % 256], axis=2)
    a = a + rng.integers(-20, 21, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def fastai_vision():
    """Imported here, not at collection: ``-m "not torch"`` runs must not pay for torch."""
    return pytest.importorskip("fastai.vision.all", reason="needs the train group (fastai)")


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}x{t[1]}")
@pytest.mark.parametrize("image_size", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fit_to_size_equals_fastai_resize(fastai_vision, image_size, target, method: str, pad_mode: str) -> None:
    img = _image(*image_size)
    resize = fastai_vision.Resize(target, method=method, pad_mode=pad_mode)
    expected = np.asarray(resize(fastai_vision.PILImage.create(np.asarray(img)), split_idx=1))
    got = fit_to_size(img, Preprocess(size=target, resize=method, pad_mode=pad_mode))
    assert got.shape == expected.shape == (*target, 3)
    np.testing.assert_array_equal(got, expected)

"""Shared fixtures: tiny models and images made on the spot, and the CI rule for optional tools.

Outside CI a test whose system tool is missing (Debian's chromium, dataset-fashion-mnist) is
skipped with the install command; in CI (``CI=true``) it fails, because .ci/run installs them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from PIL import Image

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def require(condition: bool, what: str, install: str) -> None:
    """Skip (locally) or fail (in CI) when a system dependency is missing."""
    if condition:
        return
    message = f"{what} is missing: {install}"
    if IN_CI:
        pytest.fail(message + " (.ci/run should have installed it)")
    pytest.skip(message)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    require(bool(path), "Debian's chromium", "apt-get install -y chromium")
    return path


@pytest.fixture(autouse=True, scope="session")
def auto_cache_folder(tmp_path_factory) -> Path:
    """auto's verdict cache (edge_infer.auto_cache) in a temporary folder, never the user's;
    subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("auto-cache")
    os.environ["EDGE_INFER_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory) -> Path:
    """channel-mean -> softmax over red/green/blue, 32x32 crop; see tests/tiny_models.py."""
    return tiny_models.colour_model_file(tmp_path_factory.mktemp("models") / "colours.onnx")


@pytest.fixture(scope="session")
def colour_images(tmp_path_factory) -> dict[str, Path]:
    """One solid-colour JPEG per label: {"red": .../red.jpg, ...}."""
    folder = tmp_path_factory.mktemp("colour-images")
    out = {}
    for colour in tiny_models.COLOURS:
        out[colour] = folder / f"{colour}.jpg"
        Image.fromarray(tiny_models.solid(colour)).save(out[colour], quality=95)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)

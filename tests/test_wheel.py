"""The wheel people install: only edge_infer/, four dependencies, and it works with no torch.

Builds from a copy of the files the wheel is made of (pyproject.toml, README.md, edge_infer/),
so a build never writes into the checkout, and a file the wheel needs but the copy lacks fails
here rather than on PyPI. The fresh venv gets its four dependencies from the package index.
"""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tiny_models
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DEPENDENCIES = {"numpy", "pillow", "onnxruntime", "click"}
SERVE_EXTRA = {"starlette", "uvicorn", "python-multipart"}  # edge-infer serve, optional
WHEEL_EXTRAS = {"serve", "openvino", "ray", "heif"}  # features of edge_infer itself


def _run(*cmd: object, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "edge_infer", src / "edge_infer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "-q", "-w", work / "dist")
    (built,) = (work / "dist").glob("edge_infer-*.whl")
    return built


def test_the_wheel_holds_only_edge_infer(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {"edge_infer/__init__.py", "edge_infer/cli.py", "edge_infer/py.typed"} <= set(names)
    # the `edge-infer web` page is package data (pyproject.toml's package-data)
    assert {f"edge_infer/static/{n}" for n in ("page.js", "web/web.js", "web/preprocess.js")} <= set(names)
    strays = [n for n in names if not (n.startswith("edge_infer/") or n.split("/")[0].endswith(".dist-info"))]
    assert strays == []
    assert not any("__pycache__" in n or n.startswith(("tests/", "train/", "export/")) for n in names)


def test_the_wheel_requires_exactly_four_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    runtime = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    names = {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in runtime}  # type: ignore[union-attr]
    assert names == RUNTIME_DEPENDENCIES and len(runtime) == 4
    serve = [r for r in meta.get_all("Requires-Dist") if 'extra == "serve"' in r]
    assert {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in serve} == SERVE_EXTRA  # type: ignore[union-attr]


def test_the_wheel_offers_only_its_own_extras(wheel: Path) -> None:
    """train/, export/ and the tests are not in the wheel, so their dependencies are not among its
    extras (they are dependency groups): ``edge-infer[train]`` would install torch and nothing else."""
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
    assert set(meta.get_all("Provides-Extra")) == WHEEL_EXTRAS
    requirements = " ".join(meta.get_all("Requires-Dist"))
    assert not {"torch", "fastai", "onnx", "pytest"} & set(re.findall(r"[A-Za-z0-9._-]+", requirements))


def test_the_installed_wheel_classifies_without_torch(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python, script = venv / "bin" / "python", venv / "bin" / "edge-infer"
    _run(python, "-m", "pip", "install", "-q", wheel, timeout=600)
    for heavy in ("torch", "fastai", "onnx"):
        done = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True, text=True)
        assert done.returncode != 0 and "No module named" in done.stderr
    model = tiny_models.colour_model_file(tmp_path / "colours.onnx")
    red = tmp_path / "red.png"
    Image.fromarray(tiny_models.solid("red")).save(red)
    done = _run(script, "predict", model, red, "--format", "csv")
    assert done.stdout.splitlines()[1].split(",")[:2] == [str(red), "red"]
    served = subprocess.run([script, "serve", model], capture_output=True, text=True, timeout=60)
    assert served.returncode == 1 and 'pip install "edge-infer[serve]"' in served.stderr

"""``import edge_infer`` stays light: no torch, fastai, onnx or click; nor does ``import export``
(each checked in a fresh interpreter, because this test process has them all loaded already)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "fastai", "onnx", "onnxscript", "click", "sklearn", "matplotlib",
         "openvino")


def loaded_after(statement: str) -> set[str]:
    """Top-level packages from HEAVY that ``statement`` imports, in a new interpreter."""
    code = (f"import sys, json\n{statement}\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("statement", [
    "import edge_infer",
    "from edge_infer import Classifier, ModelInfo, ImageError",
    "import edge_infer.bench",
])
def test_the_library_imports_nothing_heavy(statement: str) -> None:
    assert loaded_after(statement) == set()


def test_the_cli_adds_click_and_nothing_else() -> None:
    assert loaded_after("import edge_infer.cli") == {"click"}


def test_the_export_cli_reads_its_defaults_without_torch() -> None:
    """``python -m export --help`` shows export's defaults from ``export.defaults``, not the stages."""
    assert loaded_after("import export.cli") == {"click"}


def test_the_train_cli_builds_its_choices_without_torch() -> None:
    """``python -m train --help`` lists ``--arch`` from ``export.train_config``, not ``train.learner``."""
    assert loaded_after("import train.cli") == {"click"}


def test_the_check_can_fail() -> None:
    """The probe really sees imports: importing click is reported."""
    assert loaded_after("import click") == {"click"}


def test_import_export_loads_no_torch() -> None:
    """``import export`` is light; the stages import torch when used."""
    assert loaded_after("import export") == set()


@pytest.mark.torch
def test_export_run_is_the_pipeline_function_with_its_signature() -> None:
    """``export.export_run`` is the real function, so help() and IDEs show its options."""
    pytest.importorskip("torch")
    import inspect

    import export
    from export.pipeline import export_run

    assert export.export_run is export_run
    options = inspect.signature(export.export_run).parameters
    assert list(options)[:2] == ["run_dir", "out"]
    assert {"int8", "calib", "opset", "check", "force", "max_float_layers", "echo"} <= set(options)
    assert options["int8"].kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(AttributeError, match="no attribute 'export_runs'"):
        getattr(export, "export_runs")  # noqa: B009 - a typo is an AttributeError, as on any module

"""The JSON the docs show is JSON, and the model-format examples are what the code reads and writes.

Every fenced ```json block in README.md, docs/*.md and the packages' READMEs must parse. The
metadata example in docs/model-format.md must load with ``ModelInfo.from_json`` (the runtime's
reader) and come back unchanged from ``to_dict``; its parity tiers, and the ``parity.int8``
example, must have exactly the keys export's results keep (their ``SUMMARY``) and the tolerances,
batches and gate that ``export.parity`` and ``export.int8_gate`` use (those need torch).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge_infer.metadata import ModelInfo

ROOT = Path(__file__).resolve().parents[1]
MODEL_FORMAT = ROOT / "docs" / "model-format.md"
FENCE = re.compile(r"^```json\n(.*?)^```", re.M | re.S)


def json_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number of the fence, text) of every ```json block in ``path``."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md"))]


ALL_BLOCKS = [(path, line, text) for path in documents() for line, text in json_blocks(path)]


def model_format_example(key: str, *, without: str = "encoding") -> dict:
    """The docs/model-format.md JSON block whose top level has ``key`` (and not ``without``:
    the canaries block has an ``int8`` key too)."""
    (found,) = [d for _, text in json_blocks(MODEL_FORMAT)
                if key in (d := json.loads(text)) and (key == without or without not in d)]
    return found


def test_the_collector_finds_the_examples() -> None:
    assert len(json_blocks(MODEL_FORMAT)) == 3  # the metadata block, parity.int8, the canaries


@pytest.mark.parametrize("path, line, text", ALL_BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in ALL_BLOCKS])
def test_every_json_block_parses(path: Path, line: int, text: str) -> None:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        pytest.fail(f"{path.relative_to(ROOT)}:{line + e.lineno}: not JSON ({e.msg})")


def test_the_metadata_example_loads_with_the_runtime_reader() -> None:
    example = model_format_example("schema")
    info = ModelInfo.from_json(json.dumps(example), source="docs/model-format.md")
    assert info.to_dict() == example  # every field read, none invented or dropped
    assert info.labels == ("black", "grizzly", "teddy") and info.preprocess.size == (224, 224)


def test_the_canaries_example_reads_with_the_runtime_reader() -> None:
    from edge_infer.canaries import Canaries

    example = model_format_example("encoding")
    canaries = Canaries.from_json(json.dumps(example), source="docs/model-format.md", size=(2, 2), classes=3)
    assert len(canaries) == example["count"] and canaries.pixels.shape == tuple(example["shape"])
    assert json.loads(canaries.to_json()) == example  # the writer gives back the same object


@pytest.mark.torch
def test_the_parity_examples_match_what_export_writes() -> None:
    pytest.importorskip("torch")
    from edge_infer.agreement import wilson_lower
    from export.int8_gate import compare
    from export.parity import ATOL, BATCHES, FILE_TOLERANCE, RTOL, FileParity, TensorParity
    from export.report import Int8Report

    parity = model_format_example("schema")["parity"]
    int8 = model_format_example("int8")
    # exactly the keys export keeps, no more
    assert {k: set(v) for k, v in parity.items()} == {"tensor": set(TensorParity.SUMMARY),
                                                       "files": set(FileParity.SUMMARY)}
    assert list(int8) == ["int8"] and set(int8["int8"]) == set(Int8Report.SUMMARY)
    assert (parity["tensor"]["rtol"], parity["tensor"]["atol"]) == (RTOL, ATOL)
    assert parity["tensor"]["batches"] == list(BATCHES)
    assert parity["files"]["tolerance"] == FILE_TOLERANCE
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    q = int8["int8"]
    assert q["gate"] == compare(probs, probs, np.array([0, 1]), ["a", "b"]).to_dict()["gate"]
    same = q["files"] - q["near_tie_flips"] - q["confident_flips"]  # the example's numbers agree
    assert q["agreement"] == same / q["files"]
    assert q["agreement_lower95"] == round(wilson_lower(same, q["files"]), 5)

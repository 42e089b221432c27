"""Run folders for the `clean` tests, written directly (docs/run-folder.md): no training.

A data folder of small generated PNGs (three classes, four images each; every picture a
different smooth random pattern, so no two are near duplicates), ``train.json`` and
``split.csv`` (``run_folders.write_run``: the format ``fit`` writes), and a
``top_losses.csv`` whose ranking is known: ``RANKED[0]`` has the highest loss.
"""

from __future__ import annotations

import csv
import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from run_folders import write_run

from benchmarks.web import in_thread
from export.run_folder import RunFolder

LABELS = ("bird", "cat", "dog")
PER_CLASS = 4


@dataclass(frozen=True)
class MadeRun:
    """What a test needs to know about the run folder ``make_run`` wrote."""

    folder: Path
    data: Path
    layout: str
    ranked: tuple[str, ...]  # image paths (relative to data), highest loss first
    labels: dict  # path -> given label


def pattern(seed: int, size: int = 48) -> Image.Image:
    """A smooth random RGB picture: a 6x6 random grid upscaled bicubically."""
    grid = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)


def image_paths(layout: str) -> dict[str, str]:
    """path -> label for each layout (train-valid: no `bird` in valid, so relabelling a valid
    image to bird creates that folder)."""
    out = {}
    for label in LABELS:
        for i in range(PER_CLASS):
            if layout == "folders":
                out[f"{label}/{label}{i}.png"] = label
            elif layout == "train-valid":
                split = "valid" if i == 0 and label != "bird" else "train"
                out[f"{split}/{label}/{label}{i}.png"] = label
            else:
                out[f"images/{label}{i}.png"] = label
    return out


def make_run(root: Path, layout: str = "folders") -> MadeRun:
    """``layout``: folders, train-valid, csv (``labels.csv`` with \\n) or csv-crlf (\\r\\n)."""
    data, folder = root / "data", root / "run"
    folder.mkdir(parents=True)
    paths = image_paths("csv" if layout.startswith("csv") else layout)
    for n, rel in enumerate(paths):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        pattern(n).save(data / rel)
    if layout.startswith("csv"):
        ending = "\r\n" if layout == "csv-crlf" else "\n"
        rows = ["path,label,is_valid"] + [f"{p},{lab},{str(i % 4 == 0)}" for i, (p, lab) in enumerate(paths.items())]
        (data / "labels.csv").write_bytes((ending.join(rows) + ending).encode())
    # Highest loss first: a fixed shuffle of the paths; the top three are predicted wrong.
    ranked = [list(paths)[i] for i in np.random.default_rng(7).permutation(len(paths))]
    with open(folder / "top_losses.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "predicted", "probability", "loss", "split"])
        for i, p in enumerate(ranked):
            wrong = LABELS[(LABELS.index(paths[p]) + 1) % 3] if i < 3 else paths[p]
            w.writerow([p, paths[p], wrong, f"{0.9 - i * 0.05:.2f}", f"{4.0 - i * 0.3:.3f}",
                        "valid" if i % 4 == 0 else "train"])
    kind = "csv" if layout.startswith("csv") else layout
    valid = [p.startswith("valid/") if kind == "train-valid" else i % 4 == 0 for i, p in enumerate(paths)]
    splits = ["valid" if v else "train" for v in valid]
    write_run(folder, data.resolve(), [(p, lab, s) for (p, lab), s in zip(paths.items(), splits, strict=True)],
              labels=LABELS, layout=kind)
    return MadeRun(folder, data, kind, tuple(ranked), dict(paths))


def snapshot(data: Path) -> dict[str, str]:
    """sha256 of every file under ``data``, hidden ones included, but the journal itself."""
    return {p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file() and p.name != "journal.jsonl"}


def folders(data: Path) -> set[str]:
    return {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_dir()}


@pytest.fixture
def run_folder(tmp_path) -> MadeRun:
    return make_run(tmp_path, "folders")


@contextmanager
def serving(root: Path, layout: str = "folders", prepare=None, **server_options):
    """A ``train clean`` server for a fresh run folder, on 127.0.0.1 and a free port, in a thread.

    ``prepare(run_folder)`` may change the data before the server reads it; ``server_options``
    go to ``make_server`` (``limits``, ``body_timeout``).
    """
    from train.clean.server import make_server

    r = make_run(root, layout)
    if prepare is not None:
        prepare(r)
    srv = make_server(RunFolder.load(r.folder), port=0, **server_options)
    try:
        with in_thread(srv.run, srv.stop):
            yield r, srv
    finally:
        srv.socket.close()


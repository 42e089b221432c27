"""Run folders for tests that need one without training: written through ``export.run_folder``,
the code ``fit`` writes with, so they are the real format and follow it when it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from edge_infer.metadata import Preprocess
from export.run_folder import SPLIT_CSV, TRAIN_JSON, SplitTable, TrainInfo
from export.train_config import TrainConfig

# what a small from-scratch CPU fit resolves (python -m train fit DATA --no-pretrained --lr 1e-3)
OPTIONS = TrainConfig(arch="resnet18", size=(32, 32), epochs=1, freeze_epochs=0, lr=1e-3, lr_source="given",
                      bs=8, valid_pct=0.25, seed=42, pretrained=False, weights=None, augment=False, workers=0,
                      processes=1)


def write_run(folder: Path, data: Path, rows: Iterable[tuple[str, str, str]], *,
              labels: Iterable[str] | None = None, layout: str = "folders", **options: Any) -> TrainInfo:
    """``train.json`` and ``split.csv`` in ``folder`` for images ``rows`` (path, label, split)
    of ``data``; ``options`` replace fields of ``OPTIONS``. Returns what train.json holds."""
    from dataclasses import replace

    folder.mkdir(parents=True, exist_ok=True)
    split = SplitTable.from_rows(rows)
    split.write(folder / SPLIT_CSV)
    info = TrainInfo(data=data, layout=layout,
                     labels=tuple(labels) if labels is not None else tuple(sorted({r.label for r in split.rows})),
                     preprocess=Preprocess(size=(32, 32)), options=replace(OPTIONS, **options), device="cpu",
                     mixed_precision=False, counts=split.counts(),
                     metrics={"valid_loss": 0.5, "error_rate": 0.25, "accuracy": 0.75},
                     history=({"stage": 2, "epoch": 0, "train_loss": 0.9, "valid_loss": 0.5, "error_rate": 0.25,
                               "accuracy": 0.75, "lr": 1e-3, "seconds": 1.5},),
                     versions={"edge_infer": "0.1.0"}, seconds=2.0)
    info.write(folder / TRAIN_JSON)
    return info

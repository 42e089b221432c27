"""The network under test: a training run folder, or a random-weights one made on the spot.

Either way the benchmark ends up with what a user has after ``train`` and ``export``: a run folder
(``learner.pkl`` for ``learn.predict`` and PyTorch eager) and the fp32 and int8 ONNX files made
from it by the export package's Python API.

``--random-weights`` trains nothing worth the name: ``train.fit.fit`` makes a ResNet from random
weights (``pretrained=False``) on two dummy classes (crops of the two sample photos) for one
epoch, which is the shortest way to a real run folder. Latency does not depend on the weights;
top-1 agreement on such a model says less than on a trained one.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edge_infer.metadata import ModelInfo

if TYPE_CHECKING:
    from export.report import ExportReport

__all__ = ["Models", "prepare_models", "random_run", "export_models", "random_onnx"]

RANDOM_LR = 1e-3


@dataclass(frozen=True)
class Models:
    run: Path                  # the run folder
    onnx: dict[str, Path]      # {"fp32": ..., "int8": ...}
    source: str                # what to call it in the report
    random: bool = False       # random weights: its "accuracy" on 4 dummy images means nothing

    @property
    def learner_pkl(self) -> Path:
        return self.run / "learner.pkl"

    def describe(self, info: ModelInfo) -> dict:
        from export.run_folder import TRAIN_JSON, TrainInfo

        train = TrainInfo.read(self.run / TRAIN_JSON)
        accuracy = None if self.random else train.metrics.get("accuracy")
        return {"source": self.source, "run": str(self.run), "arch": train.options.arch,
                "size": list(info.preprocess.size), "resize": info.preprocess.resize,
                "labels": list(info.labels), "valid_accuracy": accuracy,
                **{f"{p}_onnx": str(path) for p, path in self.onnx.items()},
                **{f"{p}_mb": path.stat().st_size / 1e6 for p, path in self.onnx.items()}}


def random_run(out: Path, data: Path, *, arch: str, size: int, quiet: bool = True) -> Path:
    """A run folder for ``arch`` at ``size`` from random weights, via ``train.fit.fit``."""
    from export.train_config import TrainConfig
    from train.fit import fit

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        return fit(data, out, TrainConfig(arch=arch, size=size, epochs=1, freeze_epochs=0, lr=RANDOM_LR, bs=8,
                                          valid_pct=0.25, pretrained=False))


def export_models(run: Path, out: Path, *, check: bool,
                  log: Callable[[str], None] = print) -> tuple[dict[str, Path], ExportReport]:
    """fp32 and int8 ONNX files from ``run`` through ``export.export_run``, and its report.

    ``force=True``: a model that misses the int8 gate or a parity tier is still timed (the
    benchmark measures speed; its own top-1 agreement and the report's numbers say how close).
    """
    from export import export_run
    from export.pipeline import int8_path

    fp32 = out / "model.onnx"
    report = export_run(run, fp32, int8=True, check=check, force=True, echo=lambda m: log(f"  export: {m}"))
    return {"fp32": fp32, "int8": int8_path(fp32)}, report


def random_onnx(work: Path, data: Path | None = None, *, arch: str, size: int) -> dict[str, Path]:
    """The fp32 and int8 files of a random-weights run folder made from ``data`` under ``work``
    (by default 4 crops of each sample photo, written there: speed does not depend on the data)."""
    if data is None:
        from .images import write_crops

        write_crops(data := work / "crops", n_per_photo=4)
    onnx, _ = export_models(random_run(work / "run", data, arch=arch, size=size), work / "onnx", check=False,
                            log=lambda m: None)
    return onnx


def prepare_models(settings, workdir: Path, *, crops_folder: Path,
                   log: Callable[[str], None] = print) -> Models:
    """The run folder and its two ONNX files for ``settings`` (see ``compare.Settings``)."""
    if settings.run is None:
        log(f"random-weights {settings.arch} at {settings.size} px: making a run folder with train.fit")
        run = random_run(workdir / "random-run", crops_folder, arch=settings.arch, size=settings.size)
        source = f"random weights ({settings.arch}, pretrained=False, 2 dummy classes, 1 epoch)"
    else:
        run, source = Path(settings.run), f"run folder {settings.run}"
    if settings.fp32_onnx is not None and settings.int8_onnx is not None:
        onnx = {"fp32": Path(settings.fp32_onnx), "int8": Path(settings.int8_onnx)}
    else:
        log(f"exporting {run} to fp32 and int8 ONNX")
        # A random network has no accuracy to keep: its parity tiers are skipped, not failed.
        onnx, report = export_models(run, workdir / "onnx", check=settings.run is not None, log=log)
        source += f"; exported here (int8 gate {'passed' if report.int8 and report.int8.gate.passed else 'not passed'})"
    return Models(run=run, onnx=onnx, source=source, random=settings.run is None)

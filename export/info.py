"""The ``ModelInfo`` an exported file carries: labels, preprocessing, provenance (its parity is
``export.report.ExportReport.summary``)."""

from __future__ import annotations

import platform

import fastai
import onnx
import onnxruntime
import torch

import edge_infer
from edge_infer.metadata import ModelInfo

from .run import Run
from .wrap import Deployable

__all__ = ["build_info"]


def build_info(run: Run, model: Deployable, opset: int) -> ModelInfo:
    """fp32, no parity yet: labels from ``learn.dls.vocab``, preprocessing from train.json."""
    metrics, trained = dict(run.info.metrics), dict(run.info.versions)
    normalise = ({k: [round(float(v), 6) for v in getattr(model, k).flatten()] for k in ("mean", "std")}
                 if model.normalise else None)
    provenance = {
        "arch": run.info.options.arch,
        "valid_error_rate": metrics.get("error_rate"),
        "metrics": metrics,
        "run": run.folder.resolve().name,
        "counts": {split: dict(n) for split, n in run.info.counts.items()},
        "options": run.info.options.to_dict(),
        "fastai": trained.get("fastai", fastai.__version__),
        "torch": trained.get("torch", torch.__version__),
        "trained_with": trained,
        "exported_with": {"torch": torch.__version__, "fastai": fastai.__version__,
                          "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                          "edge_infer": edge_infer.__version__, "python": platform.python_version()},
        "exporter": "torch.onnx.export(dynamo=False)",
        "opset": opset,
        "normalize": normalise,
    }
    return ModelInfo(labels=run.labels, preprocess=run.preprocess, precision="fp32", provenance=provenance)


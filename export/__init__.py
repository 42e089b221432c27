"""export: a training run folder -> one self-describing ONNX file (``python -m export``).

Needs the ``export`` dependency group (torch, onnx, onnxscript) and fastai to read the learner. Imports go
train -> export -> edge_infer: the metadata is written through ``edge_infer.metadata`` and the
parity and calibration images are decoded by ``edge_infer.preprocess``, so the format and the
pixels are defined once. ``import export`` is light; the stages import torch when used.
"""

__all__ = ["export_run"]


def export_run(*args, **kwargs):  # noqa: D103 - documented in export.pipeline
    from .pipeline import export_run as run

    return run(*args, **kwargs)

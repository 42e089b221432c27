"""Export's defaults and limits, in one place: the pipeline, accuracy control and the CLI read
them here (``python -m export --help`` imports only this and click, no torch)."""

from __future__ import annotations

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET", "DEFAULT_CALIB", "MAX_FLOAT_LAYERS"]

DEFAULT_OPSET = 18     # the newest that every onnxruntime >= 1.14 runs (export.onnx_export says why)
MIN_OPSET = 13         # per-channel QuantizeLinear/DequantizeLinear
MAX_OPSET = 20         # the TorchScript exporter's newest
DEFAULT_CALIB = 100    # training images that calibrate the int8 model
MAX_FLOAT_LAYERS = 4   # most layers accuracy control keeps in float (export.accuracy_control)

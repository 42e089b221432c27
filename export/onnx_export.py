"""torch -> ONNX: export a ``Deployable``, check the graph, and write the edge_infer metadata.

The exporter is pinned to the TorchScript one (``dynamo=False``); measured on fastai ResNets
with torch 2.14 (the table in export/README.md), both agree with torch to ~1e-7, and this one

* gives a graph ``quant_pre_process`` can shape-infer (on dynamo's, fastai's
  ``AdaptiveConcatPool2d`` + ``Flatten`` become a ``Shape -> Range -> Gather`` chain it cannot follow);
* writes pooling nodes onnxruntime quantises (``GlobalAveragePool``, not ``ReduceMean``);
* writes IR 8 at opset 18, which onnxruntime 1.17 (the wheel's floor) loads (dynamo: IR 10,
  opset >= 18);
* is twice as fast, and writes one file (dynamo: external weights).

The TorchScript exporter is deprecated in torch 2.9+; when it goes, ``test_export.py`` fails at
the first export, and this is the one place to change.

Opset 18 by default: the newest that every onnxruntime >= 1.14 runs, and >= 13, which
per-channel QDQ quantisation needs.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch

from edge_infer.canaries import CANARIES_KEY, Canaries
from edge_infer.metadata import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, ModelInfo

from .defaults import DEFAULT_OPSET
from .wrap import Deployable

__all__ = ["to_onnx", "set_info", "set_canaries", "save"]


def to_onnx(model: Deployable, size: tuple[int, int], opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export ``model`` for uint8 [N, H, W, 3] input with a dynamic batch axis; checked."""
    h, w = size
    example = torch.zeros((2, h, w, 3), dtype=torch.uint8)  # batch 2, so nothing specialises on 1
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notice (see module docstring)
        torch.onnx.export(
            # Recent torch annotates f as a path only, but the TorchScript exporter (dynamo=False)
            # writes to any file-like object (unused-ignore: older torch annotates BytesIO too).
            model, (example,), buffer,  # type: ignore[arg-type, unused-ignore]
            dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def set_info(model: onnx.ModelProto, info: ModelInfo) -> onnx.ModelProto:
    """Store ``info`` as the one edge_infer metadata entry (other entries are kept)."""
    return _set_entry(model, METADATA_KEY, info.to_json())


def set_canaries(model: onnx.ModelProto, canaries: Canaries) -> onnx.ModelProto:
    """Store ``canaries`` as the ``edge_infer.canaries`` entry (``edge_infer.canaries`` says why there)."""
    return _set_entry(model, CANARIES_KEY, canaries.to_json())


def _set_entry(model: onnx.ModelProto, key: str, value: str) -> onnx.ModelProto:
    others = {p.key: p.value for p in model.metadata_props if p.key != key}
    onnx.helper.set_model_props(model, {**others, key: value})
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    """One self-contained file (ResNets are far below protobuf's 2 GB limit)."""
    onnx.save_model(model, str(path), save_as_external_data=False)
    return path

"""edge_infer: classify images with one self-describing ONNX file, on any CPU.

Needs numpy, Pillow and onnxruntime (click for the CLI only). ``import edge_infer`` loads
neither torch nor click.
"""

from ._version import __version__
from .classifier import Classifier, FileResult, Prediction
from .errors import EdgeInferError, ImageError, ModelFormatError
from .metadata import SCHEMA_VERSION, ModelInfo, Preprocess

__all__ = [
    "Classifier", "Prediction", "FileResult", "ModelInfo", "Preprocess", "SCHEMA_VERSION",
    "EdgeInferError", "ImageError", "ModelFormatError", "__version__",
]

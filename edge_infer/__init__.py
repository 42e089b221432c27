"""edge_infer: classify images with one self-describing ONNX file, on any CPU.

Needs numpy, Pillow and onnxruntime (click for the CLI only). ``import edge_infer`` loads
neither torch nor click.
"""

from ._version import __version__
from .classifier import Classifier, FileResult, Prediction
from .errors import DataError, EdgeInferError, ImageError, ModelFormatError
from .files import IMAGE_SUFFIXES, find_images
from .metadata import SCHEMA_VERSION, ModelInfo, Preprocess

__all__ = [
    "Classifier", "Prediction", "FileResult", "ModelInfo", "Preprocess", "SCHEMA_VERSION",
    "EdgeInferError", "ImageError", "ModelFormatError", "DataError", "find_images", "IMAGE_SUFFIXES",
    "__version__",
]

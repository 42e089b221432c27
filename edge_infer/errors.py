"""The errors edge_infer raises on purpose.

Each one carries a single line that names the file and what is wrong with it, so a CLI can print
it as-is and a caller can catch one family (``EdgeInferError``) without catching programming
mistakes (``TypeError``, ``KeyError``...).

``EdgeInferError`` is the one base of every tool's errors: ``train.errors.TrainError`` (and its
``CleanError``) and ``export.errors.ExportError`` (and its ``CheckFailed``) subclass it, so each
CLI prints any of them the same way: ``Error: <one line>`` on stderr and exit status 1 (click's
own ``ClickException`` format, which usage errors already use). Nothing here imports train or
export: the import direction is train -> export -> edge_infer.
"""

from __future__ import annotations

__all__ = ["EdgeInferError", "ImageError", "NotAnImage", "ModelFormatError", "DataError", "first_line"]


class EdgeInferError(Exception):
    """Base class: a problem with the user's input, not a bug in edge_infer."""


class ImageError(EdgeInferError, ValueError):
    """An image could not be turned into pixels: missing, empty, corrupt, too large..."""


class NotAnImage(ImageError):
    """Bytes in no image format Pillow knows (a server answers 415, not 400)."""


class ModelFormatError(EdgeInferError, ValueError):
    """A model file is not an edge_infer ONNX model, or its metadata and graph disagree."""


class DataError(EdgeInferError, ValueError):
    """A folder of labelled images is not in a layout edge_infer reads, or its labels.csv is bad."""


def first_line(e: object) -> str:
    """The first line of an exception's (or a warning's) message, else its type's name: how a
    one-line error quotes a library's multi-line one."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

"""export: a training run folder -> one self-describing ONNX file (``python -m export``).

Needs the ``export`` dependency group (torch, onnx, onnxscript) and fastai to read the learner.
The metadata and the pixels are ``edge_infer``'s (``metadata``, ``preprocess``), defined once.

``import export`` is light (no torch): ``export.export_run`` is ``export.pipeline.export_run``
itself, with its real signature and docstring, imported on first access (PEP 562 module
``__getattr__``) rather than re-declared here, where its defaults could drift from the real ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers and IDEs see the real function
    from .pipeline import export_run

__all__ = ["export_run"]


def __getattr__(name: str) -> Any:
    if name == "export_run":
        from .pipeline import export_run

        return export_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The errors ``python -m export`` raises on purpose; each message is one line naming the file.
Both are ``edge_infer.errors.EdgeInferError``, the one base of every tool's errors, so the CLI
prints either as ``Error: ...`` and exits 1."""

from __future__ import annotations

from edge_infer.errors import EdgeInferError

__all__ = ["ExportError", "CheckFailed"]


class ExportError(EdgeInferError):
    """A problem with the input: the run folder, an image that no longer decodes, an option."""


class CheckFailed(ExportError):
    """A model was made but failed a parity tier or the int8 gate; the numbers are in ``parity.json``."""

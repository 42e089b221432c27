"""The errors ``python -m export`` raises on purpose; each message is one line naming the file.

``ExportError`` is a problem with the input (a run folder that is missing or incomplete, an
image that no longer decodes); ``CheckFailed`` is a model that was made but did not pass a check
(a parity breach, the int8 gate). Both are ``edge_infer.errors.EdgeInferError``, the one base of
every tool's errors, so the CLI prints either as ``Error: ...`` and exits 1.
"""

from __future__ import annotations

from edge_infer.errors import EdgeInferError

__all__ = ["ExportError", "CheckFailed"]


class ExportError(EdgeInferError):
    """A problem with the run folder or the options, in one line that names the file."""


class CheckFailed(ExportError):
    """A parity tier or the int8 gate failed; the numbers are in ``parity.json``."""

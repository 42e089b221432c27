"""The errors ``python -m train`` raises on purpose: a problem with the user's input.

Both are ``edge_infer.errors.EdgeInferError``, the one base of every tool's errors (train and
export import edge_infer, never the reverse), so each CLI catches one family, prints its
single line as ``Error: ...`` and exits 1, while bugs keep their traceback. ``TrainError`` is
also a ``ValueError``, as it always was, so older ``except ValueError`` callers still catch it.
"""

from __future__ import annotations

from edge_infer.errors import EdgeInferError

__all__ = ["TrainError", "CleanError"]


class TrainError(EdgeInferError, ValueError):
    """Bad data, a bad option, or a missing resource (pretrained weights offline)."""


class CleanError(TrainError):
    """A problem with a run folder, data folder, decision or journal record met by ``clean``
    (the page, ``--apply``, ``--undo``): one line, printed as-is."""
